//! The baseline the bench compares against: the same bytes over one TCP connection with TLS 1.3
//! (rustls, the same mutual-TLS certificates and cipher suites), written to a file and fsynced
//! by the receiver, which then acknowledges — what a plain "upload over HTTPS" would do. It has
//! no resume: a cut connection starts over from the first byte.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use grassroots_provisioning::Kit;
use grassroots_transport::tls::{edge_client_config, hub_server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts uploads until dropped; each connection writes a new file and acknowledges once
/// `expected` bytes are on disk.
pub async fn receive(listener: TcpListener, kit: Kit, dir: PathBuf, expected: u64) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(hub_server_config(&kit, None)?));
    for index in 0u64.. {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let path = dir.join(format!("tcp-upload-{index}"));
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let Ok(mut file) = tokio::fs::File::create(&path).await else {
                return;
            };
            let mut buffer = vec![0u8; 256 * 1024];
            let mut received = 0u64;
            while received < expected {
                match tls.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if file.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                        received += n as u64;
                    }
                }
            }
            if file.sync_all().await.is_ok() {
                let _ = tls.write_all(b"k").await;
                let _ = tls.shutdown().await;
            }
        });
    }
    Ok(())
}

/// Uploads `path`; drops the connection as soon as `abort` says so (returns `Ok(false)`).
pub async fn send(
    addr: std::net::SocketAddr,
    kit: &Kit,
    path: &std::path::Path,
    abort: impl Fn() -> bool,
) -> Result<bool> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(edge_client_config(kit, None)?));
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(grassroots_provisioning::HUB_SERVER_NAME)?;
    let mut tls = connector.connect(name, stream).await?;
    let mut file = tokio::fs::File::open(path).await?;
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        tls.write_all(&buffer[..n]).await?;
        if abort() {
            return Ok(false);
        }
    }
    tls.flush().await?;
    let mut ack = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(600), tls.read_exact(&mut ack)).await {
        Ok(Ok(_)) if ack[0] == b'k' => Ok(true),
        _ => bail!("no acknowledgement from the receiver"),
    }
}
