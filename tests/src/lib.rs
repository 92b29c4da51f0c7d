//! LDLM end-to-end tests (work in progress: see the issue tracker).
