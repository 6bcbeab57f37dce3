//! Reading a bearer token (RFC 6750) out of an `Authorization` header's value: the one
//! parser both the API and the relay use.

/// Why an `Authorization` value carries no bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Not `SCHEME CREDENTIALS`, or not text.
    #[error("malformed Authorization header")]
    Malformed,
    /// Another scheme, or an empty token.
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
}

/// The token of `Bearer TOKEN` (the scheme in any case, surrounding blanks trimmed).
pub fn bearer_token(authorization: &str) -> Result<&str, BearerError> {
    let (scheme, token) = authorization.split_once(' ').ok_or(BearerError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(BearerError::NotBearer);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_a_bearer_value_only() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer  abc "), Ok("abc"));
        assert_eq!(bearer_token("BEARER abc"), Ok("abc"));
        assert_eq!(bearer_token("Bearer"), Err(BearerError::Malformed));
        assert_eq!(bearer_token(""), Err(BearerError::Malformed));
        assert_eq!(bearer_token("Bearer   "), Err(BearerError::NotBearer));
        assert_eq!(bearer_token("Basic YTpi"), Err(BearerError::NotBearer));
        assert_eq!(bearer_token("Bearerx abc"), Err(BearerError::NotBearer));
    }
}
