//! The LDLM gRPC transport (tonic) (work in progress: see the issue tracker).
