//! Feeds arbitrary bytes to every storage decoder: none may panic, and every
//! failure must be a `Corrupt` error naming the location it was given.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tracepool::Error;
use tracepool::driver::format::{
    decode_event_lines, decode_info, decode_log_lines, decode_node, decode_space,
    decode_space_data,
};

fn check<T>(r: tracepool::Result<T>) {
    if let Err(e) = r {
        match e {
            Error::Corrupt { location, .. } => assert!(location.starts_with("fuzz")),
            other => panic!("decoder returned a non-Corrupt error: {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(decode_info(data, "fuzz"));
    check(decode_node(data, "fuzz"));
    check(decode_space(data, "fuzz"));
    check(decode_space_data(data, "fuzz"));
    check(decode_log_lines(data, "fuzz"));
    check(decode_event_lines(data, "fuzz"));
});
