//! Tool calls as a model streams them: fragments keyed by the call's index, the id and name
//! in some fragment (not always the first), the arguments in pieces. One assembler serves
//! the run loop (which also decides per call who answers it) and the stateless completions
//! (which only collect the calls).

use crate::backends::chat::ToolCallDelta;
use std::collections::BTreeMap;

/// One call being assembled; `state` is what the caller tracks beside it.
#[derive(Debug)]
pub struct CallParts<T> {
    pub id: Option<String>,
    pub name: Option<String>,
    /// Argument text received and not yet taken (`take_arguments`).
    pub arguments: String,
    pub state: T,
}

impl<T> CallParts<T> {
    /// The argument text received since the last take.
    pub fn take_arguments(&mut self) -> String {
        std::mem::take(&mut self.arguments)
    }
}

/// The calls of one model answer, in the order of their indexes.
#[derive(Debug)]
pub struct CallAssembler<T> {
    calls: BTreeMap<u32, CallParts<T>>,
}

impl<T> Default for CallAssembler<T> {
    fn default() -> Self {
        CallAssembler { calls: BTreeMap::new() }
    }
}

impl<T> CallAssembler<T> {
    /// Adds a fragment to its call (created with `new` on its first fragment). The first
    /// id and name that arrive win: some upstreams repeat them on every fragment.
    pub fn push(&mut self, fragment: ToolCallDelta, new: impl FnOnce() -> T) -> &mut CallParts<T> {
        let call = self.calls.entry(fragment.index).or_insert_with(|| CallParts {
            id: None,
            name: None,
            arguments: String::new(),
            state: new(),
        });
        if call.id.is_none() {
            call.id = fragment.id;
        }
        if call.name.is_none() {
            call.name = fragment.name;
        }
        call.arguments.push_str(&fragment.arguments);
        call
    }

    /// A call whose name never came: nobody can answer it.
    pub fn nameless(&self) -> Option<&CallParts<T>> {
        self.calls.values().find(|c| c.name.is_none())
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut CallParts<T>> {
        self.calls.values_mut()
    }

    pub fn into_calls(self) -> impl Iterator<Item = CallParts<T>> {
        self.calls.into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> ToolCallDelta {
        ToolCallDelta { index, id: id.map(Into::into), name: name.map(Into::into), arguments: arguments.into() }
    }

    #[test]
    fn fragments_join_into_calls_in_index_order() {
        let mut calls = CallAssembler::<()>::default();

        calls.push(fragment(1, Some("call_b"), Some("lookup"), "{\"q\":"), || ());
        calls.push(fragment(0, Some("call_a"), Some("weather"), ""), || ());
        calls.push(fragment(1, None, None, "\"x\"}"), || ());
        calls.push(fragment(0, None, None, "{}"), || ());

        let joined: Vec<(String, String, String)> =
            calls.into_calls().map(|c| (c.id.unwrap(), c.name.unwrap(), c.arguments)).collect();
        assert_eq!(
            joined,
            vec![
                ("call_a".into(), "weather".into(), "{}".into()),
                ("call_b".into(), "lookup".into(), "{\"q\":\"x\"}".into())
            ]
        );
    }

    #[test]
    fn the_first_id_and_name_win_when_an_upstream_repeats_them() {
        let mut calls = CallAssembler::<()>::default();

        calls.push(fragment(0, Some("call_1"), Some("f"), "{"), || ());
        let call = calls.push(fragment(0, Some("call_other"), Some("g"), "}"), || ());

        assert_eq!((call.id.as_deref(), call.name.as_deref()), (Some("call_1"), Some("f")));
        assert_eq!(call.arguments, "{}");
    }

    #[test]
    fn a_name_may_arrive_after_arguments_and_taken_text_is_not_sent_twice() {
        let mut calls = CallAssembler::<u8>::default();

        let call = calls.push(fragment(0, None, None, "{\"a\""), || 7);
        assert!(call.name.is_none());
        let call = calls.push(fragment(0, Some("call_1"), Some("f"), ":1"), || 0);
        assert_eq!(call.state, 7, "the state comes from the call's first fragment");
        assert_eq!(call.take_arguments(), "{\"a\":1");
        let call = calls.push(fragment(0, None, None, "}"), || 0);

        assert_eq!(call.take_arguments(), "}");
    }

    #[test]
    fn a_call_without_a_name_is_found() {
        let mut calls = CallAssembler::<()>::default();

        calls.push(fragment(0, Some("call_1"), Some("f"), "{}"), || ());
        calls.push(fragment(1, Some("call_2"), None, "{}"), || ());

        assert_eq!(calls.nameless().and_then(|c| c.id.as_deref()), Some("call_2"));
    }
}
