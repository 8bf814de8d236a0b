//! Connection tracking for the fast path.
//!
//! - `map`: a fixed-capacity open-addressing hash map, allocated once, used for flows,
//!   persistence templates and fragment groups.
//! - `state`: TCP state inferred from the client's flags, as IPVS does for DR (only the
//!   client-to-server direction is seen), with per-state timeouts.
//! - `table`: the flow table built from both, with the eviction policy for a full table.

pub mod map;
pub mod state;
pub mod table;

pub use state::FlowState;
pub use table::{FlowKey, FlowTable, FlowVal, Hit, Idle, InsertError};
