//! The LDLM REST transport (raw hyper 1.x) (work in progress: see the issue tracker).
