//! End-to-end tests: the real `minderd` and `minder` binaries, real children, real signals,
//! a real unix socket in a temporary directory. One test binary, as ripgrep does, so the
//! harness is compiled once.

mod harness;

mod children;
mod cli;
mod compat;
mod config;
mod containment;
mod deploy;
mod habits;
mod httpurls;
mod lifecycle;
mod listeners;
mod logs;
mod mesh;
mod network;
mod probes;
mod readiness;
mod reliability;
mod reload;
mod security;
mod shell;
mod upgrade;
mod web;
mod xmlrpc;
