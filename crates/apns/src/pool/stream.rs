//! One exchange on one stream: the request, its answer, and what a stream error means (sent
//! again elsewhere, or an outcome), with the PING that tells a slow APNs from a silent path.

use super::*;

/// The result of one exchange on one stream.
pub(super) enum Step {
    Answer(Outcome),
    /// APNs never processed the stream; send it again.
    Refused,
    /// Its connection went silent and was closed: send it again elsewhere.
    Silent,
}

impl Shared {
    pub(super) async fn exchange(
        &self,
        lease: &mut Lease<'_>,
        n: &Notification,
        token: Option<&ProviderToken>,
        deadline: Option<Instant>,
        withdraw: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Step {
        let conn = lease.conn;
        let req = build_request(
            n,
            self.config.endpoint.authority(),
            token.map(ProviderToken::header),
        );
        let ready = tokio::select! {
            biased;
            () = withdraw => return Step::Answer(Outcome::Withdrawn),
            ready = std::future::poll_fn(|cx| lease.send.poll_ready(cx)) => ready,
        };
        if let Err(e) = ready {
            debug!(conn, error = %e, "connection no longer takes streams");
            self.drain(conn, "not ready");
            return Step::Refused;
        }
        // h2 may have waited for the server's stream limit to allow one more.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Step::Answer(Outcome::NotSentInTime);
        }
        let (response, mut body) = match lease.send.send_request(req, false) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(conn, error = %e, "stream not opened");
                self.drain(conn, "send_request failed");
                return Step::Refused;
            }
        };
        if let Err(e) = body.send_data(n.payload.clone(), true) {
            // The stream closed before its body could be queued: a GOAWAY that arrived
            // between the HEADERS and this call (h2 closes streams above its last-stream-id
            // and answers `InactiveStreamId` here), or a reset. Either way APNs never had the
            // whole request, so it cannot have delivered it: send it again.
            debug!(conn, error = %e, "stream closed before its body was sent");
            return Step::Refused;
        }
        let answer = async {
            let response = response.await?;
            let (head, mut recv) = response.into_parts();
            let mut buf = Vec::new();
            if !recv.is_end_stream() {
                while let Some(chunk) = recv.data().await {
                    let chunk = chunk?;
                    let _ = recv.flow_control().release_capacity(chunk.len());
                    if buf.len() + chunk.len() <= MAX_ERROR_BODY {
                        buf.extend_from_slice(&chunk);
                    }
                }
            }
            Ok::<_, h2::Error>((head, buf))
        };
        let mut answer = std::pin::pin!(answer);
        let answered = match tokio::time::timeout(self.config.response_timeout, &mut answer).await {
            Ok(answered) => answered,
            Err(_) => {
                // No answer in time: slow, or a connection gone silent? Its driver PINGs it;
                // the answer may still come meanwhile.
                let Some(health) = self.health_of(conn) else {
                    body.send_reset(h2::Reason::CANCEL);
                    return Step::Answer(Outcome::Timeout);
                };
                tokio::select! {
                    biased;
                    answered = &mut answer => answered,
                    verdict = health.verdict() => {
                        body.send_reset(h2::Reason::CANCEL);
                        return match verdict {
                            Verdict::Alive => Step::Answer(Outcome::Timeout),
                            Verdict::Silent => Step::Silent,
                            Verdict::Ended => Step::Answer(Outcome::ConnectionLost { reason: None }),
                        };
                    }
                }
            }
        };
        match answered {
            // The connection was closed as silent under this stream.
            Err(_) if self.health_of(conn).is_some_and(|h| h.is_silent()) => Step::Silent,
            Err(e) => self.classify(conn, &e),
            Ok((head, buf)) => {
                let r = parse_response(&head, &buf);
                self.answered(conn, r.status == 200);
                Step::Answer(Outcome::Response(r))
            }
        }
    }

    /// The health of `conn`, while it has a slot (always, for the holder of a lease on it).
    pub(super) fn health_of(&self, conn: u64) -> Option<Arc<Health>> {
        let st = self.lock();
        st.conns
            .iter()
            .find(|c| c.id == conn)
            .map(|c| Arc::clone(&c.health))
    }

    /// `conn` did not answer a PING: no new streams, and its end is our doing.
    pub(super) fn silenced(&self, conn: u64) {
        let mut st = self.lock();
        if let Some(c) = st.conns.iter_mut().find(|c| c.id == conn) {
            c.send = None;
            c.closed_by_us = true;
        }
    }

    /// Maps a stream error: refused, or above a GOAWAY's last-stream-id → re-send; anything
    /// else may have been processed → connection lost.
    ///
    /// h2 gives a stream the peer's GOAWAY error only when the stream is above the frame's
    /// last-stream-id, which by RFC 9113 §6.8 the server did not and will not process —
    /// whatever the error code (`NO_ERROR` for a graceful close, `ENHANCE_YOUR_CALM`,
    /// `INTERNAL_ERROR`...). Streams at or below it that end without an answer when the
    /// connection closes get an I/O error (broken pipe) instead: those may have been
    /// delivered, and are reported lost.
    pub(super) fn classify(&self, conn: u64, e: &h2::Error) -> Step {
        if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Step::Refused;
        }
        if e.is_go_away() {
            self.drain(conn, "GOAWAY");
            if e.is_remote() {
                return Step::Refused;
            }
            warn!(conn, error = %e, "connection closed with streams in flight");
            return Step::Answer(Outcome::ConnectionLost { reason: None });
        }
        if e.is_io() {
            self.drain(conn, "I/O error");
        }
        debug!(conn, error = %e, "stream failed");
        Step::Answer(Outcome::ConnectionLost { reason: None })
    }
}
