//! What every LDLM transport shares: timer driver, wait futures, TLS, password (work in progress: see the issue tracker).
