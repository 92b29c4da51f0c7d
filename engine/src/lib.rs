//! The LDLM lock engine (being written).
