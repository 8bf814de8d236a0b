//! The HA pair's pure parts (issue 12): the VRRPv3 adverts with the pair's authenticator
//! (`advert`), and the election of the master (`election`, RFC 5798's state machine with the
//! clock passed in). The runtime that sends and receives adverts, moves the VIPs and syncs
//! flows builds on these.

pub mod advert;
pub mod election;
