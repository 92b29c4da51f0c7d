//! The LDLM admin channel over a Unix socket (work in progress: see the issue tracker).
