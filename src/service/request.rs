//! Reading request bodies: the content type, a hard size cap, and parsing into the route's
//! fields with errors that name the field.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderMap;
use http_body::Body;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::reply::Failure;
use crate::paths::percent_decoded;
use crate::BoxError;

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

pub(crate) const JSON: &str = "application/json";
pub(crate) const FORM: &str = "application/x-www-form-urlencoded";

/// Whether the request's media type (parameters such as `charset` aside) is `expected`.
pub(crate) fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), Failure> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Failure::UnsupportedMediaType);
    };
    let Ok(value) = value.to_str() else {
        return Err(Failure::UnsupportedMediaType);
    };
    let mut parts = value.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|media_type| media_type.eq_ignore_ascii_case(expected))
    {
        return Err(Failure::UnsupportedMediaType);
    }
    // Bodies are read as UTF-8 (JSON is nothing else, RFC 8259): a form sent in another
    // charset would be read as different text than its sender meant.
    let other_charset = parts
        .filter_map(|part| part.split_once('='))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("charset")
                && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        });
    if other_charset {
        return Err(Failure::UnsupportedMediaType);
    }
    Ok(())
}

/// Reads the whole body, refusing it (`413`) as soon as it passes [`MAX_BODY_BYTES`]:
/// a declared `Content-Length` over the cap is refused before reading, and the bytes are
/// counted as they arrive, so a lying or absent `Content-Length` changes nothing.
pub(crate) async fn read_body<B>(headers: &HeaderMap, body: B) -> Result<Bytes, Failure>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(Failure::PayloadTooLarge);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Failure::PayloadTooLarge),
        Err(_) => Err(Failure::UnreadableBody),
    }
}

/// Parses a JSON body into `T`, whose fields are the strings `fields`. Unknown fields are
/// refused (a typo such as `pasword` must not register an account without the intended
/// password) and so are duplicates (two parsers must never read two different values from
/// one body).
pub(crate) fn parse_json<T: DeserializeOwned>(
    body: &[u8],
    fields: &[&'static str],
) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|error| {
        let message = error.to_string();
        let description = match error.classify() {
            serde_json::error::Category::Data => data_error_description(&message),
            _ => "the body is not valid JSON",
        };
        // serde names the offending value's type, not its field; find the field that is not
        // a string.
        let field = named_field(&message, fields).or_else(|| {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(body).ok()?;
            fields
                .iter()
                .copied()
                .find(|field| object.get(*field).is_some_and(|value| !value.is_string()))
        });
        Failure::Invalid { field, description }
    })
}

/// Parses an `application/x-www-form-urlencoded` body into `T`. Unknown fields are ignored,
/// as OAuth 2.0 requires of a token endpoint (clients send `scope`, `client_id`…); duplicate
/// fields are refused (RFC 6749 §3.2: parameters must not be included more than once).
pub(crate) fn parse_form<T: DeserializeOwned>(
    body: &[u8],
    fields: &[&'static str],
) -> Result<T, Failure> {
    // serde_urlencoded decodes invalid UTF-8 lossily: `%FF` and `%FE` would both be U+FFFD,
    // two passwords one. Such a body is refused instead.
    for pair in body.split(|&byte| byte == b'&') {
        let mut parts = pair.splitn(2, |&byte| byte == b'=');
        let mut decoded = || percent_decoded(parts.next().unwrap_or_default(), true);
        let (key, value) = (decoded(), decoded());
        if std::str::from_utf8(&key).is_err() || std::str::from_utf8(&value).is_err() {
            return Err(Failure::Invalid {
                field: fields.iter().copied().find(|field| field.as_bytes() == key),
                description: "a field is not UTF-8 text",
            });
        }
    }
    serde_urlencoded::from_bytes(body).map_err(|error| {
        let message = error.to_string();
        Failure::Invalid {
            field: named_field(&message, fields),
            description: data_error_description(&message),
        }
    })
}

fn data_error_description(message: &str) -> &'static str {
    if message.starts_with("duplicate field") {
        "a field appears more than once"
    } else if message.starts_with("unknown field") {
        "the body has a field this route does not accept"
    } else if message.starts_with("missing field") {
        "a required field is missing"
    } else if message.starts_with("invalid type") {
        "a field has the wrong type; strings are expected"
    } else {
        "the body could not be parsed"
    }
}

/// The route's own field name that serde's message is about, if any. Only names from
/// `fields` are ever returned, so a response never echoes a name the client made up.
fn named_field(message: &str, fields: &[&'static str]) -> Option<&'static str> {
    let quoted = message.split('`').nth(1)?;
    fields.iter().copied().find(|field| *field == quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Pair {
        name: String,
        secret: String,
    }

    const FIELDS: &[&str] = &["name", "secret"];

    fn field_of(result: Result<Pair, Failure>) -> Option<&'static str> {
        match result.unwrap_err() {
            Failure::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_duplicates_missing_and_wrong_types_name_the_field() {
        let duplicate = br#"{"name":"a","secret":"b","name":"c"}"#;
        assert_eq!(field_of(parse_json(duplicate, FIELDS)), Some("name"));
        assert_eq!(
            field_of(parse_json(br#"{"name":"a"}"#, FIELDS)),
            Some("secret")
        );
        assert_eq!(
            field_of(parse_json(br#"{"zzz":1,"name":"a","secret":"b"}"#, FIELDS)),
            None
        );
    }

    #[test]
    fn form_duplicates_are_refused() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Form {
            name: Option<String>,
        }
        let result: Result<Form, _> = parse_form(b"name=a&name=b", &["name"]);
        assert!(matches!(
            result,
            Err(Failure::Invalid {
                field: Some("name"),
                ..
            })
        ));
        let ignored: Form = parse_form(b"name=a&scope=x", &["name"]).unwrap();
        assert_eq!(ignored.name.as_deref(), Some("a"));
    }

    /// Two bodies whose bytes differ must never read as one text: invalid UTF-8 is refused,
    /// naming the field, not replaced.
    #[test]
    fn a_form_field_that_is_not_utf8_is_refused() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Form {
            name: Option<String>,
        }
        for body in [&b"name=%FF"[..], b"name=a%C3%28", b"x%FE=1&name=a"] {
            let result: Result<Form, _> = parse_form(body, &["name"]);
            let expected = if body.starts_with(b"name") {
                Some("name")
            } else {
                None
            };
            assert!(
                matches!(result, Err(Failure::Invalid { field, .. }) if field == expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let text: Form = parse_form(b"name=%C3%A9t%C3%A9+%25+50%", &["name"]).unwrap();
        assert_eq!(text.name.as_deref(), Some("été % 50%"));
    }

    #[test]
    fn content_types_match_without_parameters_or_case() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(require_content_type(&headers, JSON).is_ok());
        // Read as UTF-8 whatever it says: another charset is refused, not misread.
        for (value, accepted) in [
            ("application/x-www-form-urlencoded; charset=\"UTF-8\"", true),
            (
                "application/x-www-form-urlencoded;charset=iso-8859-1",
                false,
            ),
            (
                "application/x-www-form-urlencoded; Charset=windows-1252",
                false,
            ),
        ] {
            let mut form = HeaderMap::new();
            form.insert(CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(
                require_content_type(&form, FORM).is_ok(),
                accepted,
                "{value}"
            );
        }
        assert!(require_content_type(&headers, FORM).is_err());
        assert!(require_content_type(&HeaderMap::new(), JSON).is_err());
    }
}
