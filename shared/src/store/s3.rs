//! placeholder: the S3 adapter is being written.
use super::*;
#[derive(Debug, Clone)] pub struct S3Store;
