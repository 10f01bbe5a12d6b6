//! The metrics endpoint's HTTP/1.1, as little of it as Prometheus needs:
//! one request per connection (`Connection: close`), `GET /metrics` answered
//! with the exposition text, every other path 404, every other method 405,
//! anything unparsable or larger than [`MAX_REQUEST_BYTES`] 400. Pure: bytes
//! in, a decision and bytes out; `endpoint.rs` does the sockets.
//!
//! Why so small: the endpoint is read-only and serves one resource, so a
//! request's head (method and path) is all that matters; headers are read
//! only to find their end, a body is never read (a GET has none), and no
//! keep-alive means no connection state between requests.

/// The only resource.
pub(crate) const METRICS_PATH: &str = "/metrics";

/// The exposition format's content type (text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request head larger than this is refused (Prometheus sends ~300 bytes).
pub(crate) const MAX_REQUEST_BYTES: usize = 8192;

/// What to answer to the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The head is not complete yet: read more.
    Incomplete,
    /// `GET /metrics` (a query string is ignored).
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Classifies the bytes received so far on a connection.
pub(crate) fn classify(received: &[u8]) -> Answer {
    let Some(end) = find(received, b"\r\n\r\n").or_else(|| find(received, b"\n\n")) else {
        return if received.len() >= MAX_REQUEST_BYTES { Answer::BadRequest } else { Answer::Incomplete };
    };
    if end > MAX_REQUEST_BYTES {
        return Answer::BadRequest;
    }
    let Ok(head) = std::str::from_utf8(&received[..end]) else {
        return Answer::BadRequest;
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Answer::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Answer::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != METRICS_PATH {
        Answer::NotFound
    } else if method != "GET" {
        Answer::MethodNotAllowed
    } else {
        Answer::Metrics
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A complete response: status line, headers, body; the connection closes
/// after it.
pub(crate) fn response(status: u16, content_type: &str, extra_headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Cache-Control: no-store\r\n",
        body.len()
    );
    for (k, v) in extra_headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The answer to anything but a metrics request.
pub(crate) fn refusal(r: Answer) -> Vec<u8> {
    let text = "text/plain; charset=utf-8";
    match r {
        Answer::NotFound => response(404, text, &[], "not found: the metrics are at /metrics\n"),
        Answer::MethodNotAllowed => response(405, text, &[("Allow", "GET")], "only GET is allowed\n"),
        _ => response(400, text, &[], "bad request\n"),
    }
}

/// `logical_ext.metrics_listen`: `host:port`, `[v6]:port`, or a bare port
/// (loopback, 127.0.0.1). `None` when it names no port.
pub(crate) fn listen_target(setting: &str) -> Option<String> {
    let s = setting.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Some(format!("127.0.0.1:{port}"));
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    (!host.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_metrics_and_nothing_else() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: localhost:9188\r\nAccept: text/plain\r\n\r\n";
        assert_eq!(classify(get), Answer::Metrics);
        assert_eq!(classify(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Answer::Metrics);
        assert_eq!(classify(b"GET /metrics HTTP/1.1\n\n"), Answer::Metrics, "bare newlines");
        assert_eq!(classify(b"GET / HTTP/1.1\r\n\r\n"), Answer::NotFound);
        assert_eq!(classify(b"GET /metrics/x HTTP/1.1\r\n\r\n"), Answer::NotFound);
        assert_eq!(classify(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"), Answer::MethodNotAllowed);
        assert_eq!(classify(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Answer::MethodNotAllowed);
        assert_eq!(classify(b"DELETE /other HTTP/1.1\r\n\r\n"), Answer::NotFound);
    }

    #[test]
    fn partial_malformed_and_oversized_requests() {
        assert_eq!(classify(b""), Answer::Incomplete);
        assert_eq!(classify(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Answer::Incomplete);
        assert_eq!(classify(b"GET /metrics\r\n\r\n"), Answer::BadRequest, "HTTP/0.9");
        assert_eq!(classify(b"GET  /metrics HTTP/1.1\r\n\r\n"), Answer::BadRequest);
        assert_eq!(classify(b"GET metrics HTTP/1.1\r\n\r\n"), Answer::BadRequest);
        assert_eq!(classify(b"GET /metrics SPDY/3\r\n\r\n"), Answer::BadRequest);
        assert_eq!(classify(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"), Answer::BadRequest);
        let huge = vec![b'a'; MAX_REQUEST_BYTES];
        assert_eq!(classify(&huge), Answer::BadRequest);
        let mut long_header = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long_header.extend(vec![b'a'; MAX_REQUEST_BYTES]);
        long_header.extend(b"\r\n\r\n");
        assert_eq!(classify(&long_header), Answer::BadRequest);
    }

    #[test]
    fn responses_close_and_say_their_length() {
        let r = String::from_utf8(response(200, CONTENT_TYPE, &[], "a 1\n")).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\n\
             Connection: close\r\nCache-Control: no-store\r\n\r\na 1\n"
        );
        let r = String::from_utf8(refusal(Answer::MethodNotAllowed)).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && r.contains("\r\nAllow: GET\r\n"), "{r}");
        assert!(String::from_utf8(refusal(Answer::NotFound)).unwrap().starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(String::from_utf8(refusal(Answer::BadRequest)).unwrap().starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }

    #[test]
    fn listen_targets() {
        assert_eq!(listen_target("9188").as_deref(), Some("127.0.0.1:9188"));
        assert_eq!(listen_target(" 127.0.0.1:9188 ").as_deref(), Some("127.0.0.1:9188"));
        assert_eq!(listen_target("[::1]:9188").as_deref(), Some("[::1]:9188"));
        assert_eq!(listen_target("localhost:9188").as_deref(), Some("localhost:9188"));
        assert_eq!(listen_target("localhost"), None);
        assert_eq!(listen_target(":9188"), None);
        assert_eq!(listen_target("host:99999"), None);
    }
}
