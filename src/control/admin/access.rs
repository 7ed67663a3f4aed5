//! Who may call the admin API, and how much they may send: the bearer
//! token of mutating calls, compared in constant time, and the bounded
//! request body.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH};
use hyper::Request;

use super::{ApiError, MAX_BODY};

/// Checks `Authorization: Bearer <token>`.
pub(super) fn authorize<B>(req: &Request<B>, token: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::NoToken);
    };
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    match presented {
        None => Err(ApiError::MissingToken),
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::WrongToken),
    }
}

/// The credentials of an `Authorization` value of the `Bearer` scheme,
/// whose name is case-insensitive (RFC 9110 §11.1; `bearer t0k` was
/// refused); surrounding white space is not part of them.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Reads a body of at most [`MAX_BODY`] bytes.
pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge),
        Err(source) => Err(ApiError::BodyUnreadable { source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"t0k", b"t0k"));
        assert!(!constant_time_eq(b"t0k", b"t0K"));
        assert!(!constant_time_eq(b"t0k", b"t0kk"));
        assert!(!constant_time_eq(b"", b"t"));
        assert!(constant_time_eq(b"", b""));
    }

    fn request(auth: Option<&str>) -> Request<()> {
        let mut b = Request::post("/v1/lease");
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).expect("request")
    }

    fn error_text(r: ApiError) -> String {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        r.to_string()
    }

    #[test]
    fn bearer_token_is_required() {
        assert!(authorize(&request(Some("Bearer t0k")), Some("t0k")).is_ok());
        assert!(authorize(&request(Some("bearer t0k")), Some("t0k")).is_ok());
        assert!(authorize(&request(Some("Basic t0k")), Some("t0k")).is_err());
        assert!(authorize(&request(Some("Bearer")), Some("t0k")).is_err());
        let r = authorize(&request(Some("Bearer nope")), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("wrong admin token"));
        let r = authorize(&request(None), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("missing Authorization"));
        let r = authorize(&request(Some("Basic t0k")), Some("t0k")).unwrap_err();
        assert!(error_text(r).contains("missing Authorization"));
        let r = authorize(&request(Some("Bearer t0k")), None).unwrap_err();
        assert!(error_text(r).contains("admin.token is not set"));
    }
}
