//! One call of the model as its trace shows it: the `chat {model}` span (GenAI semantic
//! conventions) and what the answer said of itself, recorded on the span when the answer
//! ends. A conversation's rounds and the stateless completions both go through here, so a
//! model call looks the same in a trace wherever it was made.

use crate::backends::chat::{ChatDelta, ChatRequest, DeltaStream, ModelBackend};
use crate::domain::conversations::Usage;
use crate::error::Error;
use crate::telemetry::{self, traces};
use tracing::{Instrument, Span};

/// A model round in flight: its span, and the usage, finish reasons and model the upstream
/// reported so far.
pub struct ModelRound {
    /// The model asked for: the label its tokens are counted under.
    requested: String,
    span: Span,
    usage: Option<Usage>,
    finish_reasons: Vec<String>,
    model: Option<String>,
}

impl ModelRound {
    /// The `number`th call of `model` in its turn (1 outside conversations).
    pub fn start(model: &str, backend: &dyn ModelBackend, number: u32) -> ModelRound {
        ModelRound {
            requested: model.to_owned(),
            span: traces::model_round_span(model, backend.provider(), number),
            usage: None,
            finish_reasons: Vec::new(),
            model: None,
        }
    }

    /// The span the answer is read in (the upstream sees it as the caller of its request).
    pub fn span(&self) -> &Span {
        &self.span
    }

    /// Sends the request inside the round's span. A failure ends the round.
    pub async fn call(
        self,
        backend: &dyn ModelBackend,
        request: ChatRequest<'_>,
    ) -> Result<(ModelRound, DeltaStream), Error> {
        match backend.chat_stream(request).instrument(self.span.clone()).await {
            Ok(stream) => Ok((self, stream)),
            Err(error) => {
                self.end(Some(&error));
                Err(error)
            }
        }
    }

    /// Keeps what a usage or finish delta says of the answer; other deltas are the caller's.
    pub fn note(&mut self, delta: ChatDelta) {
        match delta {
            ChatDelta::Usage(usage) => self.usage = Some(usage),
            ChatDelta::Finish { reason, model } => {
                self.finish_reasons.push(reason);
                self.model = model.or(self.model.take());
            }
            ChatDelta::Text(_) | ChatDelta::ToolCall(_) | ChatDelta::Reference(_) => {}
        }
    }

    /// Records the answer (or `error`) on the span and closes it, and counts its tokens
    /// (`palaver_tokens_total`, a failed answer's too: the upstream spent them); returns the
    /// usage.
    pub fn end(self, error: Option<&Error>) -> Option<Usage> {
        if let Some(usage) = &self.usage {
            telemetry::tokens(&self.requested, usage.prompt_tokens, usage.completion_tokens);
        }
        traces::model_round_ended(
            &self.span,
            traces::RoundEnd {
                tokens: self.usage.map(|u| (u.prompt_tokens, u.completion_tokens)),
                response_model: self.model.as_deref(),
                finish_reasons: &self.finish_reasons,
                error: error.map(|e| e.code().name()),
            },
        );
        self.usage
    }
}
