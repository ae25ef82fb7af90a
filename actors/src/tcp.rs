//! TCP (RFC 3261 §18): Content-Length framing, a connection table keyed by the remote
//! address, one bounded queue per connection, idle timeout, CRLF keep-alive pongs
//! (RFC 5626 §3.5.1). Responses and in-dialog requests reuse the connection they belong
//! to; a send to an address with no connection opens one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use limes_sip::framing::{check, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::settings::Transport;
use crate::transport::{ConnHandle, Flow, Outbound, SendError};

/// Queues `bytes` on the connection to `to`, opening one if needed.
pub(crate) fn send(out: &Arc<Outbound>, to: SocketAddr, bytes: Bytes) -> Result<(), SendError> {
    let Some(inbound) = out.inbound.get() else {
        return Err(SendError::NoSocket);
    };
    let mut table = out.tcp.lock();
    if let Some(conn) = table.get(&to) {
        return conn.tx.try_send(bytes).map_err(|_| SendError::QueueFull);
    }
    if table.len() >= out.settings.tcp_max_connections {
        return Err(SendError::TooManyConnections);
    }
    let (tx, rx) = mpsc::channel(out.settings.tcp_queue);
    let id = out.next_id();
    let _ = tx.try_send(bytes);
    table.insert(to, ConnHandle { id, tx });
    drop(table);
    let inbound = inbound.clone();
    let timeout = out.settings.tcp_connect_timeout;
    let out_ref = out.clone();
    out.runtime.spawn(async move {
        match tokio::time::timeout(timeout, TcpStream::connect(to)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                run(out_ref, stream, to, id, rx, inbound).await;
            }
            _ => {
                warn!(remote = %to, "tcp connect failed");
                out_ref.metrics.tcp_connect_failed();
                forget(&out_ref, to, id);
            }
        }
    });
    Ok(())
}

fn forget(out: &Outbound, remote: SocketAddr, id: u64) {
    let mut table = out.tcp.lock();
    if table.get(&remote).is_some_and(|c| c.id == id) {
        table.remove(&remote);
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn listen(
    out: Arc<Outbound>,
    listener: TcpListener,
    inbound: Arc<dyn crate::transport::Inbound>,
    mut shutdown: watch::Receiver<bool>,
) {
    match listener.local_addr() {
        Ok(local) => info!(%local, "tcp listening"),
        Err(e) => warn!(error = %e, "tcp listening on a socket with no local address"),
    }
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let (tx, rx) = mpsc::channel(out.settings.tcp_queue);
                let id = out.next_id();
                {
                    let mut table = out.tcp.lock();
                    if table.len() >= out.settings.tcp_max_connections {
                        out.metrics.drop_reason("tcp_connection_limit");
                        continue;
                    }
                    table.insert(remote, ConnHandle { id, tx });
                }
                let _ = stream.set_nodelay(true);
                tokio::spawn(run(out.clone(), stream, remote, id, rx, inbound.clone()));
            }
        }
    }
}

/// Reads, frames and hands over messages; writes what the queue brings; closes on error,
/// on a framing error, or after the idle timeout.
async fn run(
    out: Arc<Outbound>,
    stream: TcpStream,
    remote: SocketAddr,
    id: u64,
    mut rx: mpsc::Receiver<Bytes>,
    inbound: Arc<dyn crate::transport::Inbound>,
) {
    let Ok(local) = stream.local_addr() else {
        forget(&out, remote, id);
        return;
    };
    out.metrics.tcp_connection(1);
    debug!(%remote, %local, "tcp connection open");
    let flow = Flow {
        transport: Transport::Tcp,
        remote,
        local,
    };
    let (mut reader, mut writer) = stream.into_split();
    let pong_tx = out.tcp.lock().get(&remote).map(|c| c.tx.clone());
    let writer_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });

    let limits = out.limits;
    let idle = out.settings.tcp_idle_timeout;
    let mut buf = BytesMut::with_capacity(8192);
    'conn: loop {
        let read = tokio::time::timeout(idle, reader.read_buf(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Err(_) => {
                debug!(%remote, "tcp idle timeout");
                break;
            }
            Ok(Ok(_)) => {}
        }
        loop {
            match check(&buf, &limits) {
                Ok(Frame::Message { len }) => {
                    let msg = buf.split_to(len).freeze();
                    inbound.on_message(msg, flow);
                }
                Ok(Frame::KeepAlive { len, ping }) => {
                    buf.advance(len);
                    if ping {
                        if let Some(tx) = &pong_tx {
                            let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                        }
                    }
                }
                Ok(Frame::Incomplete) => break,
                Err(e) => {
                    warn!(%remote, reason = e.label(), "tcp framing error, closing");
                    out.metrics.drop_reason(e.label());
                    break 'conn;
                }
            }
        }
        // Keep the buffer from holding on to a large allocation after a big message.
        if buf.is_empty() && buf.capacity() > 65_536 {
            buf = BytesMut::with_capacity(8192);
        }
    }
    forget(&out, remote, id);
    drop(pong_tx);
    writer_task.abort();
    out.metrics.tcp_connection(-1);
    debug!(%remote, "tcp connection closed");
}
