//! `image_generation`, run by palaver through an OpenAI-compatible images API
//! (`[image_generation]`). The image is stored through the Files API as
//! `image_generated_N.png` and shown to the user as a `tool_file` chunk of the answer; the
//! model is only told that it was generated and shown.

use super::{Connector, FileSink, ProducedFile, ServerTool, ToolCall, ToolOutput};
use crate::config::ImageGenerationConfig;
use crate::error::Error;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_MODEL: &str = "gpt-image-1";
const DEFAULT_SIZE: &str = "1024x1024";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_MAX_MB: u64 = 20;

pub struct ImageGeneration {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
    model: String,
    size: String,
    max_bytes: usize,
    files: Arc<dyn FileSink>,
    tools: Arc<Vec<ServerTool>>,
}

impl ImageGeneration {
    pub fn new(config: &ImageGenerationConfig, files: Arc<dyn FileSink>) -> anyhow::Result<Self> {
        let timeout = config.timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
        let key = super::key_from_env("image_generation", config.api_key_env.as_deref())?;
        Ok(ImageGeneration {
            http: reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?,
            url: config.url.trim_end_matches('/').to_owned(),
            key,
            model: config.model.clone().unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            size: config.size.clone().unwrap_or_else(|| DEFAULT_SIZE.to_owned()),
            max_bytes: usize::try_from(config.max_image_mb.unwrap_or(DEFAULT_MAX_MB) * 1024 * 1024)
                .unwrap_or(usize::MAX),
            files,
            tools: Arc::new(vec![ServerTool::with_text_parameter(
                "image_generation",
                "Generate an image from a text description; the user sees it.",
                "prompt",
                "What the image shows, in detail.",
            )]),
        })
    }

    /// Asks the images API for one image and returns its bytes.
    async fn generate(&self, prompt: &str) -> Result<Bytes, String> {
        let body = json!({"model": self.model, "prompt": prompt, "size": self.size, "n": 1});
        let mut request = self.http.post(format!("{}/images/generations", self.url)).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = crate::telemetry::traces::propagate(request).send().await.map_err(transport)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(300).collect());
            return Err(format!("the image service answered {status}: {message}"));
        }
        let answer: ImagesAnswer = response
            .json()
            .await
            .map_err(|e| format!("the image service sent an unreadable answer: {}", e.without_url()))?;
        let Some(image) = answer.data.into_iter().next() else {
            return Err("the image service answered without an image".to_owned());
        };
        match (image.b64_json, image.url) {
            (Some(encoded), _) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| format!("the image service sent invalid base64: {e}"))?;
                if bytes.len() > self.max_bytes {
                    return Err(format!("the image is larger than {} MiB", self.max_bytes / (1024 * 1024)));
                }
                Ok(Bytes::from(bytes))
            }
            (None, Some(url)) => self.fetch(&url).await,
            (None, None) => Err("the image service answered with neither `b64_json` nor `url`".to_owned()),
        }
    }

    /// Reads an image the service left at `url`, at most `max_bytes` of it.
    async fn fetch(&self, url: &str) -> Result<Bytes, String> {
        let response = self.http.get(url).send().await.map_err(transport)?;
        if !response.status().is_success() {
            return Err(format!("fetching the generated image answered {}", response.status()));
        }
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(transport)?;
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(format!("the image is larger than {} MiB", self.max_bytes / (1024 * 1024)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    }
}

#[derive(Deserialize)]
struct ImagesAnswer {
    #[serde(default)]
    data: Vec<ImageData>,
}

#[derive(Deserialize)]
struct ImageData {
    #[serde(default)]
    b64_json: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

fn transport(error: reqwest::Error) -> String {
    let error = error.without_url();
    if error.is_timeout() {
        "the image service did not answer in time".to_owned()
    } else {
        format!("the image service could not be reached: {error}")
    }
}

/// The image format of `bytes` by its magic number: extension and media type.
pub fn image_format(bytes: &[u8]) -> Option<(&'static str, &'static str)> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(("png", "image/png"))
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(("jpeg", "image/jpeg"))
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(("webp", "image/webp"))
    } else {
        None
    }
}

#[async_trait::async_trait]
impl Connector for ImageGeneration {
    async fn tools(&self, _authorization: Option<&str>) -> Result<Arc<Vec<ServerTool>>, Error> {
        Ok(self.tools.clone())
    }

    async fn call(&self, call: ToolCall<'_>) -> Result<ToolOutput, Error> {
        let (context, arguments) = (call.context, call.arguments);
        let Some(prompt) = arguments.get("prompt").and_then(Value::as_str).filter(|p| !p.trim().is_empty()) else {
            return Ok(ToolOutput::error("`prompt` is missing: describe the image to generate."));
        };
        let bytes = match self.generate(prompt).await {
            Ok(bytes) => bytes,
            Err(message) => {
                tracing::warn!(error = %message, "image generation failed");
                return Ok(ToolOutput::error(format!("The image could not be generated: {message}.")));
            }
        };
        let Some((file_type, mimetype)) = image_format(&bytes) else {
            return Ok(ToolOutput::error(
                "The image could not be generated: the image service sent something that is not a PNG, JPEG or WebP image.",
            ));
        };
        let extension = if file_type == "jpeg" { "jpg" } else { file_type };
        // The chunk names the image without its extension, as the hosted API does.
        let stem = format!("image_generated_{}", context.calls_before);
        let file_name = format!("{stem}.{extension}");
        let file_id = self.files.store(context.ws, &file_name, mimetype, bytes).await?;
        let text = format!(
            "The image was generated and is shown to the user as `{file_name}`. Do not repeat it or link to it; \
             describe it briefly if useful."
        );
        let file = ProducedFile { file_id, file_name: stem, file_type: file_type.to_owned() };
        Ok(ToolOutput { text, files: vec![file], ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_recognised_by_their_magic_numbers() {
        assert_eq!(image_format(b"\x89PNG\r\n\x1a\n...."), Some(("png", "image/png")));
        assert_eq!(image_format(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(("jpeg", "image/jpeg")));
        assert_eq!(image_format(b"RIFF\0\0\0\0WEBPVP8 "), Some(("webp", "image/webp")));
        assert_eq!(image_format(b"<html>not an image</html>"), None);
        assert_eq!(image_format(b""), None);
    }
}
