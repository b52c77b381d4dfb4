//! Guest networking over netlink (rtnetlink): loopback up, then each
//! configured interface's MTU, addresses and link state, then the default
//! routes. Interfaces that appear late (a virtio-net driver still probing)
//! are waited for a few seconds.

use crate::config::{parse_cidr, NetworkConfig};
use futures_util::TryStreamExt;
use rtnetlink::Handle;
use std::time::Duration;

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The netlink socket.
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The error.
        source: rtnetlink::Error,
    },
    /// An interface did not show up.
    #[error("interface {0} not found")]
    NoInterface(String),
    /// A bad address in the config.
    #[error("{0}")]
    Address(String),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(nl(format!("looking up {name}"))(e)),
    }
}

async fn wait_for_link(handle: &Handle, name: &str, timeout: Duration) -> Result<u32, NetError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(i) = link_index(handle, name).await? {
            return Ok(i);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NetError::NoInterface(name.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Applies `cfg` to the current network namespace.
pub async fn configure(cfg: &NetworkConfig) -> Result<(), NetError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let task = tokio::spawn(conn);
    let result = apply(&handle, cfg).await;
    task.abort();
    result
}

async fn apply(handle: &Handle, cfg: &NetworkConfig) -> Result<(), NetError> {
    let lo = wait_for_link(handle, "lo", Duration::from_secs(1)).await?;
    handle
        .link()
        .set(lo)
        .up()
        .execute()
        .await
        .map_err(nl("setting lo up"))?;
    for iface in &cfg.interfaces {
        let index = wait_for_link(handle, &iface.name, Duration::from_secs(5)).await?;
        if let Some(mtu) = iface.mtu {
            handle
                .link()
                .set(index)
                .mtu(mtu)
                .execute()
                .await
                .map_err(nl(format!("setting MTU of {}", iface.name)))?;
        }
        for a in &iface.addresses {
            let (ip, prefix) = parse_cidr(a).map_err(NetError::Address)?;
            if let Err(e) = handle.address().add(index, ip, prefix).execute().await {
                if !is_exists(&e) {
                    return Err(nl(format!("adding {a} to {}", iface.name))(e));
                }
            }
        }
        handle
            .link()
            .set(index)
            .up()
            .execute()
            .await
            .map_err(nl(format!("setting {} up", iface.name)))?;
    }
    if let Some(gw) = cfg.gateway {
        if let Err(e) = handle.route().add().v4().gateway(gw).execute().await {
            if !is_exists(&e) {
                return Err(nl(format!("default route via {gw}"))(e));
            }
        }
    }
    if let Some(gw) = cfg.gateway6 {
        if let Err(e) = handle.route().add().v6().gateway(gw).execute().await {
            if !is_exists(&e) {
                return Err(nl(format!("default route via {gw}"))(e));
            }
        }
    }
    Ok(())
}
