//! A test controller speaking the kvrocks-controller HTTP API shape.
