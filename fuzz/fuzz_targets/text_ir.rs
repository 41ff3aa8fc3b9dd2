//! Fuzz target `text_ir`: any bytes as a text-IR source. A source that parses (and so passes
//! the verifier) must print, parse back and print to the same text; a source that does not
//! parse must fail with a user error. Non-UTF-8 bytes reach the parser through a lossy
//! conversion, as a file read by a careless host would.

#![no_main]

use fovea::graph::text::{MAX_PRINTED_LITERAL, print};
use fovea::graph::{ConstInit, ValueDef};
use fovea::{ErrorKind, Model};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let model = match Model::parse(&source) {
        Ok(model) => model,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::User, "internal error: {e}");
            return;
        }
    };
    let printed = print(model.graph());
    // Long literal constants print elided (`data(N values)`), which does not parse back.
    let elided = model.graph().values().any(|(_, v)| match &v.def {
        ValueDef::Const(c) => c.init == ConstInit::Literal && c.tensor.len() > MAX_PRINTED_LITERAL,
        _ => false,
    });
    if elided {
        return;
    }
    let again = match Model::parse(&printed) {
        Ok(again) => again,
        Err(e) => panic!("the printed text does not parse back: {e}\n{printed}"),
    };
    assert_eq!(
        print(again.graph()),
        printed,
        "the round trip changed the text"
    );
});
