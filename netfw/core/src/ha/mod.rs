//! The HA pair's pure parts (issue 12): the VRRPv3 adverts with the pair's authenticator
//! (`advert`), the election of the master (`election`, RFC 5798's state machine with the
//! clock passed in), and the flow sync's batches (`sync`). The runtime that sends and
//! receives them, moves the VIPs and syncs flows builds on these.

pub mod advert;
pub mod election;
pub mod sync;
