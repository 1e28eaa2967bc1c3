//! One module per connector kind (docs/design.md, "Tenants"): its deliverer — delivery and
//! connection test — beside the adapter that reaches the destination.

pub mod email;
pub mod gcs;
pub mod s3;
pub mod sheets;
