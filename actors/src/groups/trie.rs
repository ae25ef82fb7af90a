//! A binary prefix trie over IP addresses: the entries of one address group, looked up by
//! a source address in at most 32 (IPv4) or 128 (IPv6) steps whatever the group's size.
//! Built once per change (a snapshot), read by any number of threads.

use std::net::IpAddr;

use ipnet::IpNet;

/// No child.
const NONE: u32 = 0;

#[derive(Debug, Clone, Copy, Default)]
struct Node {
    /// Children by the next bit; `NONE` (the root's index, never a child) when absent.
    child: [u32; 2],
    /// The values stored at this prefix: `slots[first..first + count]`.
    first: u32,
    count: u32,
}

/// Prefixes of one address family, each with values (indexes into the owner's list).
#[derive(Debug, Clone)]
pub struct Trie {
    nodes: Vec<Node>,
    slots: Vec<u32>,
    /// 32 or 128.
    bits: u8,
}

/// The address as the top `bits` of a `u128`.
fn key(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

fn bit(key: u128, depth: u8) -> usize {
    ((key >> (127 - u32::from(depth))) & 1) as usize
}

impl Trie {
    /// A trie of `prefixes` (network, value), for the family of `bits` (32 or 128);
    /// networks of the other family are ignored. Values at one prefix keep their order.
    pub fn build(bits: u8, prefixes: impl IntoIterator<Item = (IpNet, u32)>) -> Self {
        let mut nodes = vec![Node::default()];
        let mut at: Vec<Vec<u32>> = vec![Vec::new()];
        for (net, value) in prefixes {
            let (k, b) = key(net.network());
            if b != bits {
                continue;
            }
            let mut n = 0usize;
            for depth in 0..net.prefix_len() {
                let side = bit(k, depth);
                if nodes[n].child[side] == NONE {
                    nodes.push(Node::default());
                    at.push(Vec::new());
                    nodes[n].child[side] = (nodes.len() - 1) as u32;
                }
                n = nodes[n].child[side] as usize;
            }
            at[n].push(value);
        }
        let mut slots = Vec::new();
        for (node, values) in nodes.iter_mut().zip(at) {
            node.first = slots.len() as u32;
            node.count = values.len() as u32;
            slots.extend(values);
        }
        Self { nodes, slots, bits }
    }

    /// The values of the longest prefix holding `ip` for which `accept` is true (values
    /// at one prefix in their order), or `None`.
    pub fn longest(&self, ip: IpAddr, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        let (k, b) = key(ip);
        if b != self.bits {
            return None;
        }
        let mut best = None;
        let mut n = 0usize;
        let mut depth = 0u8;
        loop {
            let node = self.nodes[n];
            let values = &self.slots[node.first as usize..(node.first + node.count) as usize];
            if let Some(v) = values.iter().copied().find(|v| accept(*v)) {
                best = Some(v);
            }
            if depth == self.bits {
                return best;
            }
            let next = node.child[bit(k, depth)];
            if next == NONE {
                return best;
            }
            n = next as usize;
            depth += 1;
        }
    }

    /// Nodes held (for the size census).
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_longest_accepted_prefix_wins() {
        let t = Trie::build(
            32,
            [
                (net("10.0.0.0/8"), 1),
                (net("10.1.0.0/16"), 2),
                (net("10.1.2.3/32"), 3),
                (net("0.0.0.0/0"), 4),
                (net("2001:db8::/32"), 5),
            ],
        );
        let cases = [
            ("10.1.2.3", Some(3)),
            ("10.1.2.4", Some(2)),
            ("10.2.0.1", Some(1)),
            ("192.0.2.1", Some(4)),
            ("2001:db8::1", None),
        ];
        for (addr, want) in cases {
            assert_eq!(t.longest(ip(addr), |_| true), want, "{addr}");
        }
        // A refused value at a longer prefix leaves the shorter one.
        assert_eq!(t.longest(ip("10.1.2.3"), |v| v != 3), Some(2));
        let six = Trie::build(128, [(net("2001:db8::/32"), 5), (net("::/0"), 6)]);
        assert_eq!(six.longest(ip("2001:db8::1"), |_| true), Some(5));
        assert_eq!(six.longest(ip("2001:db9::1"), |_| true), Some(6));
        assert_eq!(six.longest(ip("10.0.0.1"), |_| true), None);
    }

    #[test]
    fn host_bits_of_a_network_are_ignored() {
        let t = Trie::build(32, [(net("192.0.2.77/24"), 1)]);
        assert_eq!(t.longest(ip("192.0.2.1"), |_| true), Some(1));
        assert_eq!(t.longest(ip("192.0.3.1"), |_| true), None);
    }
}
