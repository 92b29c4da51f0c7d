//! The LDLM wire contract: ldlm.proto and its generated tonic/prost code (work in progress: see the issue tracker).
