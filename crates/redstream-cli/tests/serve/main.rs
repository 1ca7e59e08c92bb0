//! `redstream serve`: the dashboard's HTTP, WebSocket and Prometheus endpoints against private
//! redis-servers, in-process (the library's router on a free port) and through the binary.

#![allow(clippy::unwrap_used)]

mod acl;
mod auth;
mod binary;
mod bounded;
mod dead_letter;
mod failures;
mod history;
mod limits;
mod nodes;
mod observability;
mod pages;
mod params;
mod routes;
mod support;
mod websocket;
mod writes;
