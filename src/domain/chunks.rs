//! Content chunks (the official `TextChunk`, `ImageURLChunk`, `DocumentURLChunk`,
//! `ToolFileChunk`, `ToolReferenceChunk`, `ThinkingChunk`, …) and the unions of them each
//! place accepts. palaver keeps and passes on chunks as the JSON they came as (it reads
//! only `text`): these types check each chunk a client sends against the shape of its
//! `type`, and document the same shapes, so `/openapi.json` and the check cannot disagree.
//!
//! A chunk without `type` is a `text` chunk; any other chunk names its type, so a chunk
//! matches exactly one member of a union. Members a chunk type does not name are kept:
//! the SDKs ignore them, and the hosted API has been seen adding some (`source`).

use super::literal;
use crate::error::{decode_ref, Error, FieldError, Loc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

literal!(TextType = "text");
literal!(ImageUrlType = "image_url");
literal!(DocumentUrlType = "document_url");
literal!(ToolFileType = "tool_file");
literal!(ToolReferenceType = "tool_reference");
literal!(ThinkingType = "thinking");
literal!(ReferenceType = "reference");
literal!(FileType = "file");
literal!(AudioType = "input_audio");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TextChunk {
    #[serde(rename = "type", default)]
    #[schema(inline)]
    pub kind: TextType,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ImageURLChunk)]
pub struct ImageUrlChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: ImageUrlType,
    #[schema(inline)]
    pub image_url: ImageUrlValue,
}

/// A URL (`https://…` or `data:image/…;base64,…`), or an `ImageURL`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "a URL or an object with its `url`")]
pub enum ImageUrlValue {
    Url(String),
    Object(ImageUrl),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ImageURL)]
pub struct ImageUrl {
    pub url: String,
    /// `low`, `auto` or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DocumentURLChunk)]
pub struct DocumentUrlChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: DocumentUrlType,
    pub document_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_name: Option<String>,
}

/// A file a tool made, downloadable through the Files API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolFileChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: ToolFileType,
    /// The tool that made it: `code_interpreter`, `image_generation`, …
    pub tool: String,
    pub file_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// The extension, without its dot (`png`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
}

/// A source a tool found, cited by the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolReferenceChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: ToolReferenceType,
    /// The tool that found it: `web_search`, `document_library`, …
    pub tool: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub favicon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThinkingChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: ThinkingType,
    // Checked chunk by chunk (see `check`), so that a problem is located in the list.
    #[schema(value_type = Vec<Thinking>, inline)]
    pub thinking: Vec<Value>,
    /// Opaque, for replaying the reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    #[serde(default = "closed")]
    pub closed: bool,
}

fn closed() -> bool {
    true
}

/// Sources a model cites by number (inside `thinking`, or in a chat message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReferenceChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: ReferenceType,
    pub reference_ids: Vec<u64>,
}

/// An uploaded file, by its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: FileType,
    pub file_id: String,
}

/// Audio, as a URL or base64 data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AudioChunk {
    #[serde(rename = "type")]
    #[schema(inline)]
    pub kind: AudioType,
    pub input_audio: String,
}

/// A chunk `type` palaver knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    Text,
    ImageUrl,
    DocumentUrl,
    ToolFile,
    ToolReference,
    Thinking,
    Reference,
    File,
    InputAudio,
}

impl ChunkKind {
    pub fn name(self) -> &'static str {
        match self {
            ChunkKind::Text => "text",
            ChunkKind::ImageUrl => "image_url",
            ChunkKind::DocumentUrl => "document_url",
            ChunkKind::ToolFile => "tool_file",
            ChunkKind::ToolReference => "tool_reference",
            ChunkKind::Thinking => "thinking",
            ChunkKind::Reference => "reference",
            ChunkKind::File => "file",
            ChunkKind::InputAudio => "input_audio",
        }
    }

    /// Checks `chunk`, located at `at`, as a chunk of this kind.
    fn check_one(self, chunk: &Value, at: &[Loc], errors: &mut Vec<FieldError>) {
        let prefix: Vec<Loc> = std::iter::once(Loc::from("body")).chain(at.iter().cloned()).collect();
        let checked = match self {
            ChunkKind::Text => decode_ref::<TextChunk>(&prefix, chunk).map(drop),
            ChunkKind::ImageUrl => decode_ref::<ImageUrlChunk>(&prefix, chunk).map(drop),
            ChunkKind::DocumentUrl => decode_ref::<DocumentUrlChunk>(&prefix, chunk).map(drop),
            ChunkKind::ToolFile => decode_ref::<ToolFileChunk>(&prefix, chunk).map(drop),
            ChunkKind::ToolReference => decode_ref::<ToolReferenceChunk>(&prefix, chunk).map(drop),
            ChunkKind::Reference => decode_ref::<ReferenceChunk>(&prefix, chunk).map(drop),
            ChunkKind::File => decode_ref::<FileChunk>(&prefix, chunk).map(drop),
            ChunkKind::InputAudio => decode_ref::<AudioChunk>(&prefix, chunk).map(drop),
            ChunkKind::Thinking => decode_ref::<ThinkingChunk>(&prefix, chunk).map(|thinking| {
                let mut inner = at.to_vec();
                inner.push("thinking".into());
                check(&thinking.thinking, &inner, Thinking::KINDS, errors);
            }),
        };
        if let Err(Error::Invalid(mut found)) = checked {
            errors.append(&mut found);
        }
    }
}

/// Checks a `content` list located at `at` (without `body`): each chunk against the shape
/// of its `type`, which must be one of `kinds`. Every problem goes to `errors`.
pub fn check(chunks: &[Value], at: &[Loc], kinds: &[ChunkKind], errors: &mut Vec<FieldError>) {
    for (index, chunk) in chunks.iter().enumerate() {
        let mut path = at.to_vec();
        path.push(index.into());
        let Some(object) = chunk.as_object() else {
            errors.push(FieldError::body(&path, "dict_type", "Input should be a chunk object"));
            continue;
        };
        let mut type_path = path.clone();
        type_path.push("type".into());
        let name = match object.get("type") {
            None => "text",
            Some(Value::String(name)) => name.as_str(),
            Some(_) => {
                errors.push(FieldError::body(&type_path, "string_type", "Input should be a string"));
                continue;
            }
        };
        match kinds.iter().find(|kind| kind.name() == name) {
            Some(kind) => kind.check_one(chunk, &path, errors),
            None => {
                let names: Vec<String> = kinds.iter().map(|kind| format!("`{}`", kind.name())).collect();
                let msg = format!("Input should be one of {}, got `{name}`", names.join(", "));
                errors.push(FieldError::body(&type_path, "enum", msg));
            }
        }
    }
}

/// Declares a union of chunk types (an untagged enum, documented as a `oneOf`) with the
/// kinds [`check`] accepts for it, and the `content` it makes: a string or a list of them.
macro_rules! chunk_union {
    ($(#[$attr:meta])* $name:ident, $content:ident { $($kind:ident($chunk:ty)),+ $(,)? }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
        #[serde(untagged)]
        pub enum $name {
            $($kind($chunk)),+
        }

        impl $name {
            /// The chunk types of the union, in its order.
            pub const KINDS: &'static [ChunkKind] = &[$(ChunkKind::$kind),+];
        }

        // Documentation only: contents are kept as `entries::Content`.
        /// A plain string, or a list of chunks.
        #[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
        #[serde(untagged)]
        pub enum $content {
            Text(String),
            Chunks(Vec<$name>),
        }
    };
}

chunk_union!(
    /// A chunk of a `message.input` entry's content, as clients send it.
    MessageInputContentChunks,
    MessageInputContent {
        Text(TextChunk),
        ImageUrl(ImageUrlChunk),
        ToolFile(ToolFileChunk),
        DocumentUrl(DocumentUrlChunk),
        Thinking(ThinkingChunk),
    }
);

chunk_union!(
    /// A chunk of a `message.output` entry's content: an answer's citations and files too.
    MessageOutputContentChunks,
    MessageOutputContent {
        Text(TextChunk),
        ImageUrl(ImageUrlChunk),
        ToolFile(ToolFileChunk),
        DocumentUrl(DocumentUrlChunk),
        Thinking(ThinkingChunk),
        ToolReference(ToolReferenceChunk),
    }
);

chunk_union!(
    /// A chunk of a chat message's content (`POST /v1/agents/completions`, and the chat
    /// completions palaver answers): passed on to the model as sent.
    ContentChunk,
    ChatContent {
        Text(TextChunk),
        ImageUrl(ImageUrlChunk),
        DocumentUrl(DocumentUrlChunk),
        Reference(ReferenceChunk),
        File(FileChunk),
        Thinking(ThinkingChunk),
        InputAudio(AudioChunk),
    }
);

chunk_union!(
    /// A chunk inside a `thinking` chunk.
    Thinking,
    ThinkingContent {
        Text(TextChunk),
        Reference(ReferenceChunk),
        ToolReference(ToolReferenceChunk),
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(content: Value, kinds: &[ChunkKind]) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check(content.as_array().unwrap(), &["content".into()], kinds, &mut errors);
        errors
    }

    #[test]
    fn every_chunk_type_of_a_union_is_accepted_in_its_shape() {
        let content = json!([
            {"text": "untyped is text"},
            {"type": "text", "text": "t", "extra": "kept"},
            {"type": "image_url", "image_url": "https://x/i.png"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
            {"type": "document_url", "document_url": "https://x/d.pdf", "document_name": null},
            {"type": "tool_file", "tool": "code_interpreter", "file_id": "f", "file_name": "a.txt", "file_type": "txt"},
            {"type": "thinking", "thinking": [{"type": "text", "text": "hm"}, {"type": "reference", "reference_ids": [1]}],
             "signature": "s", "closed": false}
        ]);

        assert_eq!(errors_of(content, MessageInputContentChunks::KINDS), []);
    }

    #[test]
    fn a_chunk_of_another_place_or_of_a_wrong_shape_is_located() {
        let content = json!([
            {"type": "tool_reference", "tool": "web_search", "title": "t"},
            {"type": "image_url"},
            {"type": "text", "text": 3},
            {"type": null, "text": "x"},
            {"type": "thinking", "thinking": [{"type": "image_url", "image_url": "u"}]},
            {"type": "tool_file", "tool": "t", "file_id": "f", "file_name": 1},
            "text"
        ]);

        let errors = errors_of(content, MessageInputContentChunks::KINDS);

        let found: Vec<(String, &str)> = errors.iter().map(|e| (e.field_name(), e.kind)).collect();
        assert_eq!(
            found,
            [
                ("content.0.type".to_owned(), "enum"),
                ("content.1.image_url".to_owned(), "missing"),
                ("content.2.text".to_owned(), "string_type"),
                ("content.3.type".to_owned(), "string_type"),
                ("content.4.thinking.0.type".to_owned(), "enum"),
                ("content.5.file_name".to_owned(), "string_type"),
                ("content.6".to_owned(), "dict_type"),
            ]
        );
        assert_eq!(
            errors[0].msg,
            "Input should be one of `text`, `image_url`, `tool_file`, `document_url`, `thinking`, got `tool_reference`"
        );
    }

    #[test]
    fn each_union_documents_the_chunk_types_it_accepts() {
        use utoipa::{PartialSchema, ToSchema};
        fn members<T: PartialSchema>() -> Vec<String> {
            let schema = serde_json::to_value(T::schema()).unwrap();
            schema["oneOf"].as_array().unwrap().iter().map(|m| m["$ref"].as_str().unwrap().to_owned()).collect()
        }
        fn documented(kinds: &[ChunkKind]) -> Vec<String> {
            let name = |kind: &ChunkKind| match kind {
                ChunkKind::Text => TextChunk::name(),
                ChunkKind::ImageUrl => ImageUrlChunk::name(),
                ChunkKind::DocumentUrl => DocumentUrlChunk::name(),
                ChunkKind::ToolFile => ToolFileChunk::name(),
                ChunkKind::ToolReference => ToolReferenceChunk::name(),
                ChunkKind::Thinking => ThinkingChunk::name(),
                ChunkKind::Reference => ReferenceChunk::name(),
                ChunkKind::File => FileChunk::name(),
                ChunkKind::InputAudio => AudioChunk::name(),
            };
            kinds.iter().map(|kind| format!("#/components/schemas/{}", name(kind))).collect()
        }

        assert_eq!(members::<MessageInputContentChunks>(), documented(MessageInputContentChunks::KINDS));
        assert_eq!(members::<MessageOutputContentChunks>(), documented(MessageOutputContentChunks::KINDS));
        assert_eq!(members::<ContentChunk>(), documented(ContentChunk::KINDS));
        assert_eq!(members::<Thinking>(), documented(Thinking::KINDS));
    }
}
