//! Citations (DESIGN decision 11): the sources a turn's tools found, numbered in the order
//! they were found, and the scanner that finds `[n]` markers in a model's streamed text.
//! A cited source becomes a `tool_reference` chunk in the answer, where the model cited it.

use crate::connectors::Source;
use serde_json::{Map, Value};

/// The turn's sources: number `n` is the `n`th source found (numbers stay unique across the
/// tools and rounds of a turn, so a second search continues the numbering).
#[derive(Debug, Default)]
pub struct Sources {
    found: Vec<(String, Source)>,
}

impl Sources {
    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Adds what one call of `tool` found; they take the next numbers.
    pub fn add(&mut self, tool: &str, sources: Vec<Source>) {
        self.found.extend(sources.into_iter().map(|s| (tool.to_owned(), s)));
    }

    /// The `tool_reference` chunk citing source `n`, if there is one.
    pub fn chunk(&self, n: usize) -> Option<Value> {
        let (tool, source) = self.found.get(n)?;
        let mut chunk = Map::new();
        chunk.insert("type".into(), Value::from("tool_reference"));
        chunk.insert("tool".into(), Value::from(tool.as_str()));
        chunk.insert("title".into(), Value::from(source.title.as_str()));
        // Absent rather than null: every SDK line accepts a missing member.
        let optional = [("url", &source.url), ("favicon", &source.favicon), ("description", &source.snippet)];
        for (key, value) in optional {
            if let Some(value) = value {
                chunk.insert(key.into(), Value::from(value.as_str()));
            }
        }
        Some(Value::Object(chunk))
    }
}

/// A piece of streamed text once markers are found: text, or a citation of a source number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Cite(usize),
}

/// Longest text held back while it may still become a marker (`[12, 13, 14]`).
const LONGEST_MARKER: usize = 32;

/// Finds `[n]`, `[n, m]` and `【n】` markers naming known sources in text that arrives in
/// pieces. Only text from an opening bracket on is held back, and only until the marker
/// is complete or proven not to be one; everything else passes through at once. A marker
/// naming a number with no source (`[99]`) or holding anything else (`[x]`) stays text.
#[derive(Debug, Default)]
pub struct MarkerScanner {
    held: String,
}

enum Marker {
    /// A marker of these numbers, this many bytes long.
    Complete(Vec<usize>, usize),
    /// Could still become a marker: the text ends inside it.
    Partial,
    NotOne,
}

impl MarkerScanner {
    /// Scans the next piece of text; `known` sources are numbered `0..known`.
    pub fn push(&mut self, text: &str, known: usize, out: &mut Vec<Piece>) {
        let mut buffer = std::mem::take(&mut self.held);
        buffer.push_str(text);
        let (mut plain, mut at) = (0, 0);
        while let Some(offset) = buffer[at..].find(['[', '【']) {
            let open = at + offset;
            match marker(&buffer[open..], known) {
                Marker::Complete(numbers, len) => {
                    push_text(out, &buffer[plain..open]);
                    out.extend(numbers.into_iter().map(Piece::Cite));
                    at = open + len;
                    plain = at;
                }
                Marker::Partial => {
                    push_text(out, &buffer[plain..open]);
                    self.held = buffer[open..].to_owned();
                    return;
                }
                Marker::NotOne => at = open + buffer[open..].chars().next().map_or(1, char::len_utf8),
            }
        }
        push_text(out, &buffer[plain..]);
    }

    /// The end of the text: whatever was held back is text after all.
    pub fn finish(&mut self, out: &mut Vec<Piece>) {
        let held = std::mem::take(&mut self.held);
        push_text(out, &held);
    }
}

fn push_text(out: &mut Vec<Piece>, text: &str) {
    if text.is_empty() {
        return;
    }
    match out.last_mut() {
        Some(Piece::Text(last)) => last.push_str(text),
        _ => out.push(Piece::Text(text.to_owned())),
    }
}

/// Reads a marker at the start of `text` (which starts with an opening bracket).
fn marker(text: &str, known: usize) -> Marker {
    let (close, open_len) = if text.starts_with('[') { (']', 1) } else { ('】', '【'.len_utf8()) };
    let mut numbers = Vec::new();
    let mut current: Option<usize> = None;
    let mut digits = 0;
    for (index, c) in text[open_len..].char_indices() {
        match c {
            '0'..='9' => {
                digits += 1;
                if digits > 4 {
                    return Marker::NotOne;
                }
                current = Some(current.unwrap_or(0) * 10 + (c as usize - '0' as usize));
            }
            ',' => match current.take() {
                Some(n) => {
                    numbers.push(n);
                    digits = 0;
                }
                None => return Marker::NotOne,
            },
            // A space only after a comma: `[0, 1]`.
            ' ' if current.is_none() && !numbers.is_empty() => {}
            c if c == close => {
                let Some(n) = current else { return Marker::NotOne };
                numbers.push(n);
                return if numbers.iter().all(|&n| n < known) {
                    Marker::Complete(numbers, open_len + index + close.len_utf8())
                } else {
                    Marker::NotOne
                };
            }
            _ => return Marker::NotOne,
        }
    }
    if text.len() > LONGEST_MARKER {
        Marker::NotOne
    } else {
        Marker::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::*;

    fn scan(pieces: &[&str], known: usize) -> Vec<Piece> {
        let mut scanner = MarkerScanner::default();
        let mut out = Vec::new();
        for piece in pieces {
            scanner.push(piece, known, &mut out);
        }
        scanner.finish(&mut out);
        out
    }

    fn text(s: &str) -> Piece {
        Text(s.to_owned())
    }

    #[test]
    fn a_marker_naming_a_source_becomes_a_citation_in_place() {
        assert_eq!(scan(&["Spain won [0]."], 1), [text("Spain won "), Cite(0), text(".")]);
        assert_eq!(scan(&["A【1】B"], 2), [text("A"), Cite(1), text("B")]);
        assert_eq!(scan(&["A [0, 1][1]"], 2), [text("A "), Cite(0), Cite(1), Cite(1)]);
    }

    #[test]
    fn a_marker_split_across_pieces_is_still_found() {
        assert_eq!(scan(&["Spain won [", "1", "]", "."], 2), [text("Spain won "), Cite(1), text(".")]);
        assert_eq!(scan(&["x【", "0】"], 1), [text("x"), Cite(0)]);
    }

    #[test]
    fn text_before_a_bracket_is_not_held_back() {
        let mut scanner = MarkerScanner::default();
        let mut out = Vec::new();
        scanner.push("Spain won [1", 2, &mut out);
        assert_eq!(out, [text("Spain won ")]);
        scanner.push("2] ok", 2, &mut out);
        // Not a source: the held text joins the text before it.
        assert_eq!(out, [text("Spain won [12] ok")]);
    }

    #[test]
    fn what_only_looks_like_a_marker_stays_text() {
        assert_eq!(scan(&["a [x] b"], 3), [text("a [x] b")]);
        assert_eq!(scan(&["see [99]"], 3), [text("see [99]")]);
        assert_eq!(scan(&["[0, 7]"], 3), [text("[0, 7]")]);
        assert_eq!(scan(&["list[", "]"], 3), [text("list[]")]);
        assert_eq!(scan(&["an open [2 at the end"], 3), [text("an open [2 at the end")]);
        assert_eq!(scan(&["[[0]]"], 1), [text("["), Cite(0), text("]")]);
    }

    #[test]
    fn a_marker_that_never_closes_is_released_when_the_text_ends() {
        assert_eq!(scan(&["cut [1"], 3), [text("cut [1")]);
    }

    #[test]
    fn sources_number_in_the_order_they_were_found_and_cite_as_tool_references() {
        let mut sources = Sources::default();
        let hit =
            |title: &str| Source { title: title.into(), url: Some(format!("https://{title}")), ..Default::default() };
        sources.add("web_search", vec![hit("a"), hit("b")]);
        sources.add("web_search_premium", vec![hit("c")]);

        assert_eq!(sources.len(), 3);
        assert_eq!(
            sources.chunk(2).unwrap(),
            serde_json::json!({"type": "tool_reference", "tool": "web_search_premium", "title": "c", "url": "https://c"})
        );
        assert_eq!(sources.chunk(3), None);
        let documented: Result<crate::domain::chunks::ToolReferenceChunk, _> =
            serde_json::from_value(sources.chunk(0).unwrap());
        assert!(documented.is_ok(), "the chunk has the documented `ToolReferenceChunk` shape");
    }
}
