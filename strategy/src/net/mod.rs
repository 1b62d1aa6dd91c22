//! Network paths.
