//! Email: unsubscribe tokens, message building, providers, and the ports the
//! throttle and dispatcher actors use to reach the database and the mail server.

pub mod dkim;
pub mod events;
pub mod message;
pub mod ports;
pub mod preview;
pub mod provider;
pub mod sendgrid;
pub mod smtp;
pub mod unsubscribe;

pub use provider::Mailer;
pub use unsubscribe::Signer;
