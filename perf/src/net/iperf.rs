//! Reads iperf3's JSON (`-J`) of a UDP client run: what the sender sent and
//! what the receiving server counted, which is the figure the guest mode
//! reports.

use serde::Deserialize;

use crate::PerfError;

/// The receiver's side of a UDP run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpResult {
    /// Datagrams the client sent.
    pub sent: u64,
    /// Datagrams the server received (sent - lost).
    pub received: u64,
    /// Payload bytes the server received.
    pub bytes: u64,
    /// Length of the run, seconds.
    pub seconds: f64,
}

impl UdpResult {
    /// Received datagrams per second.
    pub fn pps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.received as f64 / self.seconds
        } else {
            0.0
        }
    }
}

#[derive(Deserialize)]
struct Doc {
    error: Option<String>,
    end: Option<End>,
}

#[derive(Deserialize)]
struct End {
    sum_received: Option<Sum>,
    sum: Option<Sum>,
}

#[derive(Deserialize)]
struct Sum {
    seconds: f64,
    bytes: u64,
    packets: u64,
    #[serde(default)]
    lost_packets: u64,
}

/// Parses a UDP client's `-J` output.
pub fn parse_udp(text: &str) -> Result<UdpResult, PerfError> {
    let doc: Doc =
        serde_json::from_str(text).map_err(|e| PerfError::Fio(format!("iperf3 JSON: {e}")))?;
    if let Some(e) = doc.error {
        return Err(PerfError::Fio(format!("iperf3: {e}")));
    }
    let end = doc
        .end
        .ok_or_else(|| PerfError::Fio("iperf3 JSON has no end section".into()))?;
    // iperf3 >= 3.10 reports the receiver separately; older ones fold the
    // server's loss count into `sum`.
    let s = end
        .sum_received
        .or(end.sum)
        .ok_or_else(|| PerfError::Fio("iperf3 JSON has no UDP sum".into()))?;
    let received = s.packets.saturating_sub(s.lost_packets);
    if received == 0 {
        return Err(PerfError::Fio("iperf3: the server received nothing".into()));
    }
    Ok(UdpResult {
        sent: s.packets,
        received,
        bytes: s.bytes,
        seconds: s.seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_figures_from_a_recorded_run() {
        let r = parse_udp(include_str!("../../tests/data/iperf3-udp-client.json")).unwrap();
        assert_eq!(r.sent, 200_420);
        assert_eq!(r.received, 200_420 - 62_813);
        assert_eq!(r.bytes, 2_476_926);
        assert!((r.pps() - 137_607.0 / 1.000461).abs() < 1e-6);
    }

    #[test]
    fn errors_and_empty_runs_are_refused() {
        let e = parse_udp(r#"{"error":"unable to connect to server"}"#).unwrap_err();
        assert!(e.to_string().contains("unable to connect"), "{e}");
        assert!(parse_udp("{}").is_err());
        assert!(parse_udp(
            r#"{"end":{"sum":{"seconds":1.0,"bytes":0,"packets":5,"lost_packets":5}}}"#
        )
        .is_err());
        assert!(parse_udp("not json").is_err());
    }
}
