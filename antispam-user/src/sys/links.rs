//! Network devices, over rtnetlink: the host-side ends of veth pairs whose other end is in
//! another network namespace (a container's), and the ids (nsid) the host gives namespaces.

use std::{io, os::fd::AsRawFd as _, path::Path};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    nsid::{NsidAttribute, NsidMessage},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// A host-side veth device whose peer is in another network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    pub ifindex: u32,
    pub name: String,
    /// The id the host gives the peer's network namespace.
    pub peer_nsid: u32,
}

/// Replies to one request, at most this many messages (a bound on a dump).
const MAX_MESSAGES: usize = 1 << 20;

fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    packet.header.flags = flags;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;
    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut rx[..], 0)?;
        let mut off = 0;
        while off < n {
            let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&rx[off..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(io::Error::from_raw_os_error(-code.get()));
                    }
                    return Ok(out);
                }
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if !dump {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            if out.len() >= MAX_MESSAGES {
                return Ok(out);
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

/// The host-side veth devices of this network namespace whose peer lives in another one.
pub fn veths() -> io::Result<Vec<Veth>> {
    let replies = request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP | NLM_F_REQUEST,
    )?;
    let mut out = Vec::new();
    for m in replies {
        let RouteNetlinkMessage::NewLink(link) = m else {
            continue;
        };
        let (mut name, mut veth, mut nsid) = (None, false, None);
        for a in &link.attributes {
            match a {
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    veth = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                LinkAttribute::LinkNetNsId(id) if *id >= 0 => nsid = Some(*id as u32),
                _ => {}
            }
        }
        if let (true, Some(name), Some(peer_nsid)) = (veth, name, nsid) {
            out.push(Veth {
                ifindex: link.header.index,
                name,
                peer_nsid,
            });
        }
    }
    Ok(out)
}

/// The id this network namespace gives the one `ns` names (a `/proc/PID/ns/net` or a
/// `/run/netns` file), if it has given it one (it does when a device moves between them).
pub fn nsid_of(ns: &Path) -> io::Result<Option<u32>> {
    let file = std::fs::File::open(ns)?;
    let mut msg = NsidMessage::default();
    msg.attributes
        .push(NsidAttribute::Fd(file.as_raw_fd() as u32));
    let replies = request(RouteNetlinkMessage::GetNsId(msg), NLM_F_REQUEST)?;
    for m in replies {
        if let RouteNetlinkMessage::NewNsId(n) = m {
            for a in n.attributes {
                if let NsidAttribute::Id(id) = a {
                    return Ok((id >= 0).then_some(id as u32));
                }
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_links_without_error() {
        // Any network namespace lists its devices; a test machine may have no veth.
        let v = super::veths().expect("RTM_GETLINK dump");
        for d in v {
            assert!(!d.name.is_empty(), "{d:?}");
        }
    }

    #[test]
    fn this_namespace_has_no_id_for_itself_or_says_so() {
        // The host's own namespace: either no id, or one; never an error.
        let r = super::nsid_of(std::path::Path::new("/proc/self/ns/net"));
        assert!(r.is_ok(), "{r:?}");
    }
}
