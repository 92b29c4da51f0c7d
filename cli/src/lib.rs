//! LDLM binaries: ldlm-server, ldlm-lock, ldlm-bench, and configuration loading (work in progress: see the issue tracker).
