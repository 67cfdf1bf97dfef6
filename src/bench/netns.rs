//! Several hosts on one machine, for `souk bench chaos --hosts N`: Linux network namespaces
//! joined by veth pairs to a bridge, every address inside namespaces made here.
//!
//! The bench first moves itself into a hub namespace of its own ([`enter_hub`] runs it again
//! there with `ip netns exec`), so the machine's own network is never touched: the hub holds
//! the bridge, Redis, PostgreSQL and the sandbox on the bridge's address; each worker host is a
//! namespace whose veth's other end is on the bridge. [`Hosts::cut`] takes a host's link down
//! (the process keeps running, cut off, as after a switch failure), [`Hosts::heal`] brings it
//! back.

use std::process::Command;

use anyhow::Context;

/// Set in the bench run again inside its hub: the hub's name and subnet ("10.a.b").
pub const HUB_ENV: &str = "SOUK_CHAOS_HUB";

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Whether this machine lets us make network namespaces (root, iproute2, a kernel that allows
/// it): makes one and removes it.
pub fn available() -> bool {
    let name = format!("souk-probe-{:06x}", fastrand::u32(..0xff_ffff));
    let ok = ip(&["netns", "add", &name]).is_ok();
    if ok {
        let _ = ip(&["netns", "del", &name]);
    }
    ok
}

/// Runs this same command line again inside a new hub namespace and returns its exit status;
/// the hub and every host namespace are removed afterwards.
pub fn enter_hub() -> anyhow::Result<std::process::ExitStatus> {
    let tag = fastrand::u32(..0xff_ffff);
    let hub = format!("souk-hub-{tag:06x}");
    // A /24 in 10.0.0.0/8 that exists only inside these namespaces.
    let subnet = format!("10.{}.{}", 100 + (tag >> 8) % 150, tag & 0xff);
    ip(&["netns", "add", &hub])?;
    let run = (|| -> anyhow::Result<std::process::ExitStatus> {
        ip(&["netns", "exec", &hub, "ip", "link", "set", "lo", "up"])?;
        let exe = std::env::current_exe()?;
        let status = Command::new("ip")
            .args(["netns", "exec", &hub])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(HUB_ENV, format!("{hub},{subnet}"))
            .status()
            .context("running the bench in its hub namespace")?;
        Ok(status)
    })();
    // Host namespaces are named after the hub; remove them whatever happened.
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name.starts_with(&format!("{hub}-h")) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    let _ = ip(&["netns", "del", &hub]);
    run
}

/// The worker hosts, seen from inside the hub.
pub struct Hosts {
    /// The bridge's address: where Redis, PostgreSQL and the sandbox listen.
    pub server_ip: String,
    names: Vec<String>,
}

impl Hosts {
    /// Inside the hub (the bench was run again by [`enter_hub`]): the hub's name and subnet.
    pub fn hub() -> Option<(String, String)> {
        let v = std::env::var(HUB_ENV).ok()?;
        let (hub, subnet) = v.split_once(',')?;
        Some((hub.to_owned(), subnet.to_owned()))
    }

    /// Makes the bridge in the hub and `n` host namespaces linked to it.
    pub fn create(n: usize) -> anyhow::Result<Self> {
        let (hub, subnet) = Self::hub().context("not inside a hub namespace")?;
        // Host namespaces are named after the hub, so `enter_hub` finds and removes them.
        let server_ip = format!("{subnet}.1");
        ip(&["link", "add", "br0", "type", "bridge"])?;
        ip(&["addr", "add", &format!("{server_ip}/24"), "dev", "br0"])?;
        ip(&["link", "set", "br0", "up"])?;
        let mut names = Vec::new();
        for i in 0..n {
            let ns = format!("{hub}-h{}", i + 1);
            ip(&["netns", "add", &ns])?;
            let (here, there) = (format!("vh{}", i + 1), format!("vp{}", i + 1));
            ip(&["link", "add", &here, "type", "veth", "peer", "name", &there])?;
            ip(&["link", "set", &there, "netns", &ns])?;
            ip(&["link", "set", &here, "master", "br0"])?;
            ip(&["link", "set", &here, "up"])?;
            let addr = format!("{subnet}.{}/24", 11 + i);
            ip(&["netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &there])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", &there, "up"])?;
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
            names.push(ns);
        }
        Ok(Self { server_ip, names })
    }

    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    /// `program` to run on host `i`.
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i]]).arg(program);
        c
    }

    /// Takes host `i`'s link down: its processes run on, unable to reach anything.
    pub fn cut(&self, i: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &format!("vh{}", i + 1), "down"])
    }

    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &format!("vh{}", i + 1), "up"])
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", "br0"]);
    }
}
