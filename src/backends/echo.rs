//! The built-in deterministic `echo` model: zero-config runs and users' own tests get
//! answers without any model server. It answers with the text of the last user message,
//! streamed word by word; token counts are word counts.

use super::chat::{ChatDelta, ChatMessage, ChatRequest, DeltaStream, ModelBackend};
use crate::domain::conversations::Usage;
use crate::domain::models::{Capabilities, ModelCard};
use crate::error::Error;
use futures::StreamExt;

pub const MODEL_NAME: &str = "echo";

/// Fixed creation time of the built-in model (2025-01-01), so listings are reproducible.
const CREATED: i64 = 1_735_689_600;

pub fn card() -> ModelCard {
    ModelCard {
        id: MODEL_NAME.to_owned(),
        object: "model",
        created: CREATED,
        owned_by: "palaver".to_owned(),
        kind: "base",
        capabilities: Capabilities::chat(),
        name: MODEL_NAME.to_owned(),
        description: "Built-in deterministic model: answers with the last user message. Serves every model name \
                      when no upstream is configured."
            .to_owned(),
        max_context_length: 131_072,
        aliases: Vec::new(),
        deprecation: None,
        default_model_temperature: None,
    }
}

pub struct Echo;

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn message_text(message: &ChatMessage<'_>) -> String {
    match message {
        ChatMessage::System { content } => content.to_string(),
        ChatMessage::User { content } => content.text(),
        ChatMessage::Assistant { content, .. } => content.as_ref().map(|c| c.text()).unwrap_or_default(),
        ChatMessage::Tool { content, .. } => content.to_string(),
    }
}

/// The answer: the last user message's text, else the last tool result, else a fixed line.
pub fn answer(request: &ChatRequest<'_>) -> String {
    let last = request.all_messages().iter().rev().find_map(|m| match m {
        ChatMessage::User { content } => Some(content.text()),
        ChatMessage::Tool { content, .. } => Some(content.to_string()),
        _ => None,
    });
    match last {
        Some(text) if !text.trim().is_empty() => text,
        _ => "(echo: nothing to repeat)".to_owned(),
    }
}

/// Splits text into word-sized deltas that concatenate back to it exactly.
pub fn word_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for ch in text.chars() {
        let is_space = ch.is_whitespace();
        if in_word && is_space && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        in_word = !is_space;
        current.push(ch);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[async_trait::async_trait]
impl ModelBackend for Echo {
    async fn chat_stream(&self, request: ChatRequest<'_>) -> Result<DeltaStream, Error> {
        let text = answer(&request);
        let prompt_tokens: u64 = request.all_messages().iter().map(|m| words(&message_text(m))).sum();
        let completion_tokens = words(&text);
        let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
        let deltas: Vec<Result<ChatDelta, Error>> = word_pieces(&text)
            .into_iter()
            .map(|piece| Ok(ChatDelta::Text(piece)))
            .chain(std::iter::once(Ok(ChatDelta::Usage(usage))))
            .collect();
        Ok(futures::stream::iter(deltas).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_pieces_concatenate_to_the_text() {
        for text in ["Hello world", "  lead and trail  ", "one", "", "a\n\nb\tc"] {
            assert_eq!(word_pieces(text).concat(), text);
        }
        assert_eq!(word_pieces("Hello big world"), vec!["Hello", " big", " world"]);
    }
}
