//! The init's control socket, from web-config's side: one typed request, one typed answer
//! (`director_messages::init`).

use std::path::Path;
use std::time::Duration;

use director_messages::framing::call;
use director_messages::init::{InitAnswer, InitRequest};
use director_messages::MessageError;

pub use director_messages::INIT_SOCKET as DEFAULT;

/// Send `request` and return the init's answer (a mode switch under emulation takes a while).
pub fn request(sock: &Path, request: &InitRequest) -> Result<InitAnswer, MessageError> {
    call(sock, request, Duration::from_secs(90))
}
