//! Every message type's payload decoder (prost) and the domain conversions of
//! `ecspec_proto::domain`: the first byte is the message-type byte, the next four the request
//! id (which is also the vocabulary size draft distributions are checked against), the rest
//! the payload, put in a well-formed frame so that the fuzzer spends its time in the payload.
#![no_main]

use bytes::{BufMut, BytesMut};
use ecspec_proto::{
    decode_frame, FrameError, MessageType, HEADER_LEN, LENGTH_PREFIX_LEN, PROTOCOL_VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&type_byte, rest)) = data.split_first() else {
        return;
    };
    let Some((id, payload)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let request_id = u32::from_be_bytes(*id);
    let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
    buf.put_u32((HEADER_LEN - LENGTH_PREFIX_LEN + payload.len()) as u32);
    buf.put_u8(PROTOCOL_VERSION);
    buf.put_u8(type_byte);
    buf.put_u32(request_id);
    buf.put_slice(payload);
    match decode_frame(&mut buf) {
        Ok(Some((id, msg))) => {
            assert_eq!(id, request_id);
            assert_eq!(msg.message_type().as_u8(), type_byte);
            ecspec_fuzz::check_message(id, &msg, id as usize);
        }
        Ok(None) => panic!("a whole frame was buffered"),
        Err(FrameError::UnknownMessageType {
            message_type,
            request_id: id,
        }) => {
            assert!(MessageType::from_u8(type_byte).is_none());
            assert_eq!((message_type, id), (type_byte, request_id));
        }
        Err(e @ FrameError::Payload { .. }) => {
            assert!(!e.is_fatal());
            let _ = e.to_string();
        }
        Err(e) => panic!("a well-formed frame gave a framing error: {e}"),
    }
    assert!(buf.is_empty(), "the frame was consumed");
});
