//! Model cards for `GET /v1/models` (the official models API).

use serde::Serialize;

/// Every capability written explicitly: absent keys default to `true` in Python 1.9.11 but
/// to `false` in the newer SDKs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ModelCapabilities)]
pub struct Capabilities {
    pub completion_chat: bool,
    pub completion_fim: bool,
    pub function_calling: bool,
    pub fine_tuning: bool,
    pub vision: bool,
    pub classification: bool,
    pub reasoning: bool,
    pub ocr: bool,
    pub moderation: bool,
    pub audio: bool,
    pub audio_transcription: bool,
    pub audio_transcription_realtime: bool,
    pub audio_speech: bool,
    pub unified_resources: bool,
}

impl Capabilities {
    /// What a chat model behind palaver can do through the conversations API.
    pub fn chat() -> Self {
        Capabilities {
            completion_chat: true,
            completion_fim: false,
            function_calling: true,
            fine_tuning: false,
            vision: false,
            classification: false,
            reasoning: false,
            ocr: false,
            moderation: false,
            audio: false,
            audio_transcription: false,
            audio_transcription_realtime: false,
            audio_speech: false,
            unified_resources: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = BaseModelCard)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub capabilities: Capabilities,
    pub name: String,
    pub description: String,
    pub max_context_length: u64,
    pub aliases: Vec<String>,
    pub deprecation: Option<String>,
    pub default_model_temperature: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}
