//! Deploy windows and freezes (`policy.windows`, `policy.freeze`), as Argo CD sync windows: a
//! DeployRequest runs only while no `Deny` window is open and, when `Allow` windows are declared,
//! one of them is. Pure: judged from the policy and the time.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use slipway_crds::{DeployWindow, Policy, WindowKind};

/// Why deploys cannot run now, and from when they may (`None`: not by the clock, such as a freeze).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub message: String,
    pub until: Option<Timestamp>,
}

/// A window made ready to judge.
struct Window<'a> {
    spec: &'a DeployWindow,
    cron: croner::Cron,
    zone: TimeZone,
    length: SignedDuration,
}

/// `1h`, `90m`, `1h30m` (the schema's shape) as a duration.
pub fn parse_duration(text: &str) -> Option<SignedDuration> {
    let (hours, rest) = match text.split_once('h') {
        Some((h, rest)) => (h.parse::<i64>().ok()?, rest),
        None => (0, text),
    };
    let minutes = match rest {
        "" => 0,
        m => m.strip_suffix('m')?.parse::<i64>().ok()?,
    };
    let total = hours.checked_mul(60)?.checked_add(minutes)?;
    (total > 0).then(|| SignedDuration::from_mins(total))
}

fn describe(w: &DeployWindow) -> String {
    format!("{} window \"{}\" for {} ({})", kind(w.kind), w.schedule, w.duration, w.time_zone)
}

fn kind(k: WindowKind) -> &'static str {
    match k {
        WindowKind::Allow => "allow",
        WindowKind::Deny => "deny",
    }
}

fn prepare(i: usize, w: &DeployWindow) -> Result<Window<'_>, String> {
    let what = |e: String| format!("policy.windows[{i}] ({}): {e}", describe(w));
    let cron: croner::Cron = w.schedule.parse().map_err(|e| what(format!("schedule: {e}")))?;
    let zone = TimeZone::get(&w.time_zone).map_err(|e| what(format!("timeZone: {e}")))?;
    let length = parse_duration(&w.duration).ok_or_else(|| what("duration: not hours and minutes".into()))?;
    Ok(Window { spec: w, cron, zone, length })
}

impl Window<'_> {
    /// When the window that is open at `t` closes (`None`: not open at `t`).
    fn open_until(&self, t: Timestamp) -> Option<Timestamp> {
        let at = t.to_zoned(self.zone.clone());
        let start = self.cron.find_previous_occurrence(&at, true).ok()?;
        let end = start.timestamp().checked_add(self.length).ok()?;
        (t < end).then_some(end)
    }

    /// The next start after `t`.
    fn next_start(&self, t: Timestamp) -> Option<Timestamp> {
        let at: Zoned = t.to_zoned(self.zone.clone());
        self.cron.find_next_occurrence(&at, false).ok().map(|z| z.timestamp())
    }
}

/// Deploys may run at `t`: no deny window open, and an allow window open where any is declared.
fn allowed(windows: &[Window<'_>], t: Timestamp) -> bool {
    let deny = windows.iter().filter(|w| w.spec.kind == WindowKind::Deny).any(|w| w.open_until(t).is_some());
    let mut allow = windows.iter().filter(|w| w.spec.kind == WindowKind::Allow).peekable();
    !deny && (allow.peek().is_none() || allow.any(|w| w.open_until(t).is_some()))
}

/// The first time from `now` at which deploys may run (a bounded search over window edges).
fn next_allowed(windows: &[Window<'_>], now: Timestamp) -> Option<Timestamp> {
    let mut t = now;
    for _ in 0..200 {
        if allowed(windows, t) {
            return Some(t);
        }
        let deny_ends = windows.iter().filter(|w| w.spec.kind == WindowKind::Deny).filter_map(|w| w.open_until(t));
        let allow_open = windows.iter().any(|w| w.spec.kind == WindowKind::Allow && w.open_until(t).is_some());
        let allow_starts =
            windows.iter().filter(|w| w.spec.kind == WindowKind::Allow && !allow_open).filter_map(|w| w.next_start(t));
        t = deny_ends.chain(allow_starts).filter(|c| *c > t).min()?;
    }
    None
}

/// Whether the policy lets a DeployRequest run at `now` (`Err` says why not and from when).
pub fn judge(env_name: &str, policy: &Policy, now: Timestamp) -> Result<(), Closed> {
    if policy.freeze {
        return Err(Closed {
            message: format!(
                "Environment {env_name:?} is frozen (policy.freeze): this request runs once the freeze is lifted"
            ),
            until: None,
        });
    }
    if policy.windows.is_empty() {
        return Ok(());
    }
    let windows = match policy.windows.iter().enumerate().map(|(i, w)| prepare(i, w)).collect::<Result<Vec<_>, _>>() {
        Ok(w) => w,
        // A window that cannot be read holds deploys back: it may have been meant as a deny.
        Err(e) => {
            return Err(Closed { message: format!("Environment {env_name:?}: {e}; fix the window"), until: None });
        }
    };
    if allowed(&windows, now) {
        return Ok(());
    }
    let open: Vec<String> = windows
        .iter()
        .filter(|w| w.spec.kind == WindowKind::Deny && w.open_until(now).is_some())
        .map(|w| describe(w.spec))
        .collect();
    let why =
        if open.is_empty() { "no allow window is open".to_owned() } else { format!("{} is open", open.join(", ")) };
    let until = next_allowed(&windows, now);
    let when = match until {
        Some(t) => format!("it may run from {}", t.strftime("%Y-%m-%dT%H:%M:%SZ")),
        None => "no opening was found in the windows' next 200 edges".to_owned(),
    };
    Err(Closed { message: format!("outside the deploy windows of Environment {env_name:?}: {why}; {when}"), until })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kind: WindowKind, schedule: &str, duration: &str, zone: &str) -> DeployWindow {
        DeployWindow { kind, schedule: schedule.into(), duration: duration.into(), time_zone: zone.into() }
    }

    fn policy(windows: Vec<DeployWindow>) -> Policy {
        Policy { windows, ..Policy::default() }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn durations_in_hours_and_minutes() {
        assert_eq!(parse_duration("1h"), Some(SignedDuration::from_hours(1)));
        assert_eq!(parse_duration("90m"), Some(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("1h30m"), Some(SignedDuration::from_mins(90)));
        for bad in ["", "0m", "1d", "h", "1h30", "-1h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn no_windows_and_no_freeze_let_deploys_run() {
        assert_eq!(judge("prod", &Policy::default(), at("2026-11-30T12:00:00Z")), Ok(()));
    }

    #[test]
    fn a_freeze_holds_every_deploy_without_a_time() {
        let p = Policy { freeze: true, ..Policy::default() };
        let closed = judge("prod", &p, at("2026-11-30T12:00:00Z")).unwrap_err();
        assert!(closed.message.contains("frozen") && closed.until.is_none(), "{closed:?}");
    }

    #[test]
    fn a_deny_window_holds_deploys_until_it_closes() {
        // Fridays 22:00 Berlin for 60 h: the weekend.
        let p = policy(vec![window(WindowKind::Deny, "0 22 * * 5", "60h", "Europe/Berlin")]);
        // Saturday noon UTC: inside; it closes Monday 10:00 Berlin = 09:00 UTC (CET).
        let closed = judge("prod", &p, at("2026-11-28T12:00:00Z")).unwrap_err();
        assert_eq!(closed.until, Some(at("2026-11-30T09:00:00Z")), "{closed:?}");
        assert!(closed.message.contains("deny window \"0 22 * * 5\""), "{}", closed.message);
        assert!(closed.message.contains("2026-11-30T09:00:00Z"), "{}", closed.message);
        // Friday 20:59 UTC (21:59 Berlin) and Monday 09:00 UTC: outside.
        assert_eq!(judge("prod", &p, at("2026-11-27T20:59:00Z")), Ok(()));
        assert_eq!(judge("prod", &p, at("2026-11-30T09:00:00Z")), Ok(()));
    }

    #[test]
    fn allow_windows_admit_deploys_only_while_open_and_deny_wins() {
        let office = window(WindowKind::Allow, "0 9 * * 1-5", "8h", "UTC");
        let p = policy(vec![office.clone()]);
        assert_eq!(judge("prod", &p, at("2026-11-30T10:00:00Z")), Ok(()), "Monday 10:00");
        let closed = judge("prod", &p, at("2026-11-30T18:00:00Z")).unwrap_err();
        assert!(closed.message.contains("no allow window is open"), "{}", closed.message);
        assert_eq!(closed.until, Some(at("2026-12-01T09:00:00Z")));
        // Saturday: Monday 09:00.
        assert_eq!(judge("prod", &p, at("2026-11-28T12:00:00Z")).unwrap_err().until, Some(at("2026-11-30T09:00:00Z")));
        // A lunch deny inside the allow window: held until it ends.
        let lunch = window(WindowKind::Deny, "0 12 * * *", "1h", "UTC");
        let p = policy(vec![office, lunch]);
        assert_eq!(judge("prod", &p, at("2026-11-30T12:30:00Z")).unwrap_err().until, Some(at("2026-11-30T13:00:00Z")));
        assert_eq!(judge("prod", &p, at("2026-11-30T13:00:00Z")), Ok(()));
    }

    #[test]
    fn a_window_that_cannot_be_read_holds_deploys_and_names_itself() {
        let p = policy(vec![window(WindowKind::Allow, "0 9 * * 1-5", "8h", "Mars/Olympus_Mons")]);
        let closed = judge("prod", &p, at("2026-11-30T10:00:00Z")).unwrap_err();
        assert!(closed.message.contains("policy.windows[0]") && closed.message.contains("timeZone"), "{closed:?}");
        assert_eq!(closed.until, None);
    }
}
