//! Choosing the response to send upstream when every branch has failed
//! (RFC 3261 §16.7 step 6).

/// Lower is better: any 6xx first; then the lowest class; within 4xx, the responses a
/// client can act on (401, 407, 415, 420, 484) before the others.
pub fn rank(status: u16) -> u32 {
    let class = u32::from(status / 100);
    let preferred = matches!(status, 401 | 407 | 415 | 420 | 484);
    match class {
        6 => 0,
        _ => class * 10 + u32::from(!preferred),
    }
}

/// The status actually sent for a selected response: a 503 becomes 500 (§16.7 step 6),
/// since the 503 spoke of the next hop, not of this proxy.
pub fn upstream_status(status: u16) -> u16 {
    if status == 503 {
        500
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(statuses: &[u16]) -> u16 {
        *statuses.iter().min_by_key(|s| rank(**s)).unwrap()
    }

    #[test]
    fn rfc3261_16_7_best_response() {
        assert_eq!(best(&[486, 603, 302]), 603, "6xx wins");
        assert_eq!(best(&[486, 302, 500]), 302, "lowest class");
        assert_eq!(best(&[486, 407, 404]), 407, "preferred 4xx");
        assert_eq!(best(&[503, 408]), 408);
        assert_eq!(upstream_status(503), 500);
        assert_eq!(upstream_status(486), 486);
    }
}
