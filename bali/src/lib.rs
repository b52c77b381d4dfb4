//! bali: build a Dockerfile into one signed `.tar.gz`, verify it on open,
//! and run it with `execve` inside nothing but a mount namespace.
//!
//! The binary is a thin layer over these modules; the library exists so
//! tests and the fuzz target reach the same code.
#![deny(missing_docs)]

pub mod build;
pub mod cgroup;
pub mod copy;
pub mod dockerfile;
pub mod ignore;
pub mod key;
pub mod output;
pub mod pack;
pub mod run;
pub mod sandbox;
pub mod sign;
pub mod users;
