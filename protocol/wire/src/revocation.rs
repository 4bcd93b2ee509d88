//! The network's revocation list on its way from the hub to the edges: a bulk transfer of the
//! CRL's PEM text, signed by the network's CA (the hub cannot forge one; an edge checks it with
//! its own kit's CA and keeps the newest by CRL number).

/// Transfer label of a revocation list (hub -> edge).
pub const CRL_LABEL: &str = "revocation-list";

/// The largest revocation list an edge takes (a network revokes a few certificates a year).
pub const MAX_CRL_BYTES: usize = 1 << 20;
