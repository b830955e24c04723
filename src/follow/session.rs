//! A following job from start to cutover:
//!
//! 1. Subscribe on every source primary (and set `notify-keyspace-events`).
//! 2. Scan, as a job without `--follow` does, with the changes that arrive
//!    meanwhile copied alongside. A resumed job first records a gap: what
//!    changed while it was not running is unknown.
//! 3. Follow: copy each change as it comes. After a gap, a catch-up pass
//!    compares the servers (read-only, like `verify --extra`), records each
//!    difference as `mismatch` and copies exactly those keys; a flush only
//!    needs the keys the target alone still has. Every few seconds the job
//!    looks for new primaries (subscribed, and a gap for what they did
//!    before) and for a restarted target (a gap too).
//! 4. Ctrl-C / SIGTERM: the changes waiting are copied (the drain), the
//!    subscriptions end, `notify-keyspace-events` is put back, and the job
//!    is `completed` (exit 0). If a gap is still open then, the job says so
//!    and stops `interrupted` (exit 130): `resume` catches up and follows
//!    again.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use anyhow::Result;

use crate::exit::Exit;
use crate::job::{self, Ending, Launch};
use crate::journal::{FollowPhase, Journal};
use crate::log;
use crate::options::CopyOptions;
use crate::outcome::Outcome;
use crate::pipeline::{self, PipelineSettings, Stop};
use crate::progress::Progress;
use crate::side::Side;

use super::gaps::{Gap, GapKind};
use super::{Follower, ListerMode};

/// Runs a `--follow` job (run or resume) to its end.
pub fn run(
    journal: &mut Journal,
    mut source: Side,
    mut target: Side,
    options: &CopyOptions,
    launch: &Launch,
    command: &str,
) -> Result<Exit> {
    let resumed = command != "run";
    let gaps_before = journal.follow_gap_count()?;
    let mut follower = Follower::start(&mut source, options, &launch.shutdown, gaps_before)?;
    if resumed {
        follower.record_gap(
            GapKind::Lost,
            "the job was not running between its last run and this resume, so changes made meanwhile are unknown".to_string(),
        );
    }
    let result = follow_job(
        &mut follower,
        journal,
        &mut source,
        &mut target,
        options,
        launch,
        command,
    );
    follower.stop(&mut source);
    let _ = journal.set_follow_phase(FollowPhase::Stopped);
    result
}

fn follow_job(
    follower: &mut Follower,
    journal: &mut Journal,
    source: &mut Side,
    target: &mut Side,
    options: &CopyOptions,
    launch: &Launch,
    command: &str,
) -> Result<Exit> {
    let mut progress = job::begin_scan(journal, source, target, launch, command)?;
    journal.set_follow_phase(FollowPhase::Scanning)?;
    let settings = settings_with_status(
        job::pipeline_settings(journal, options, source, target)?,
        follower,
    );
    let alongside = |scanning: Arc<AtomicUsize>| follower.lister(ListerMode::Alongside(scanning));
    let stop = job::scan_passes(
        journal,
        source,
        target,
        options,
        launch,
        &settings,
        &mut progress,
        Some(&alongside),
    );
    let stop = match stop {
        Stop::Finished => follow(
            follower,
            journal,
            source,
            target,
            options,
            launch,
            &settings,
            &mut progress,
        ),
        other => other,
    };
    progress.finish();
    job::finish(journal, stop, &progress, launch, Ending::Job)
}

/// Following, until the operator stops it.
#[allow(clippy::too_many_arguments)]
fn follow(
    follower: &mut Follower,
    journal: &mut Journal,
    source: &mut Side,
    target: &mut Side,
    options: &CopyOptions,
    launch: &Launch,
    settings: &PipelineSettings,
    progress: &mut Progress,
) -> Stop {
    follower.set_following();
    if let Err(error) = journal.set_follow_phase(FollowPhase::Following) {
        return Stop::Failed(error);
    }
    crate::metrics::set_state(crate::metrics::State::Following);
    log::info(
        "the scan is done; following: every change on the source is copied to the target. At cutover: stop the application's writes, wait until `redis-ferry status` says in sync, switch the application, then press Ctrl-C (or send SIGTERM)",
    );
    loop {
        let gaps = follower.take_gaps();
        if !gaps.is_empty() {
            match catch_up(
                follower, &gaps, journal, source, target, options, launch, settings, progress,
            ) {
                Stop::Finished => {}
                other => return other,
            }
        }
        if launch.shutdown.requested() && follower.gap_waiting() {
            return unfinished_gap();
        }
        if let Err(error) = look_around(follower, journal, source, target) {
            return Stop::Failed(error);
        }
        let stop = pipeline::run(
            vec![follower.lister(ListerMode::Following)],
            source,
            target,
            settings.clone(),
            journal,
            &launch.shutdown,
            progress,
        );
        match stop {
            Stop::Finished if launch.shutdown.requested() => {
                if follower.gap_waiting() {
                    return unfinished_gap();
                }
                log::info("every waiting change is copied; the target holds what the source holds");
                return Stop::Finished;
            }
            Stop::Finished => {}
            other => return other,
        }
    }
}

/// Stopped at cutover with a gap open: not in sync, so not `completed`.
fn unfinished_gap() -> Stop {
    log::warn(
        "stopped with a gap not caught up yet: the target may miss changes; `redis-ferry resume` catches up and follows again",
    );
    Stop::Interrupted
}

/// New primaries (subscribed, with a gap for what they did before) and a
/// target that restarted (a gap: it may have lost keys).
fn look_around(
    follower: &mut Follower,
    journal: &Journal,
    source: &mut Side,
    target: &mut Side,
) -> Result<()> {
    if source.is_cluster() {
        // Best effort: a cluster in the middle of a failover answers later.
        if source.refresh_topology().is_ok() {
            follower.subscribe_new_primaries(source)?;
        }
    }
    if let Some(change) = job::target_changed(journal, target)? {
        follower.record_gap(GapKind::Lost, change);
    }
    Ok(())
}

/// Closes `gaps`: compares the servers, then copies what differs, with the
/// changes arriving meanwhile copied alongside.
#[allow(clippy::too_many_arguments)]
fn catch_up(
    follower: &Follower,
    gaps: &[Gap],
    journal: &mut Journal,
    source: &Side,
    target: &Side,
    options: &CopyOptions,
    launch: &Launch,
    settings: &PipelineSettings,
    progress: &mut Progress,
) -> Stop {
    follower.set_catching_up(true);
    let stop = compare_and_copy(
        follower, gaps, journal, source, target, options, launch, settings, progress,
    );
    follower.set_catching_up(false);
    stop
}

#[allow(clippy::too_many_arguments)]
fn compare_and_copy(
    follower: &Follower,
    gaps: &[Gap],
    journal: &mut Journal,
    source: &Side,
    target: &Side,
    options: &CopyOptions,
    launch: &Launch,
    settings: &PipelineSettings,
    progress: &mut Progress,
) -> Stop {
    let only_flushes = gaps.iter().all(|gap| gap.kind == GapKind::Flush);
    let ids = match gaps
        .iter()
        .map(|gap| journal.record_follow_gap(gap))
        .collect::<Result<Vec<i64>>>()
    {
        Ok(ids) => ids,
        Err(error) => return Stop::Failed(error),
    };
    if let Err(error) = journal.set_follow_phase(FollowPhase::CatchingUp) {
        return Stop::Failed(error);
    }
    log::info(if only_flushes {
        "catching up: looking for keys the target has and the source lost in the flush".to_string()
    } else {
        "catching up: comparing the source and the target key by key (read-only, like `verify --extra`)".to_string()
    });
    let scope = if only_flushes {
        crate::verify::CatchUpScope::TargetOnly
    } else {
        crate::verify::CatchUpScope::Everything
    };
    let differing =
        match crate::verify::catch_up(journal, source, target, options, scope, &launch.shutdown) {
            Ok(Some(differing)) => differing,
            Ok(None) => return Stop::Interrupted,
            Err(error) => return Stop::Failed(error),
        };
    let copying = Arc::new(AtomicUsize::new(1));
    let mismatches = job::counted(
        job::retry_lister(
            journal.path().to_path_buf(),
            vec![Outcome::Mismatch],
            options.clone(),
            launch.shutdown.clone(),
        ),
        Arc::clone(&copying),
    );
    let stop = pipeline::run(
        vec![mismatches, follower.lister(ListerMode::Alongside(copying))],
        source,
        target,
        settings.clone(),
        journal,
        &launch.shutdown,
        progress,
    );
    if !matches!(stop, Stop::Finished) {
        return stop;
    }
    for id in ids {
        if let Err(error) = journal.close_follow_gap(id, differing) {
            return Stop::Failed(error);
        }
    }
    if let Err(error) = journal.set_follow_phase(FollowPhase::Following) {
        return Stop::Failed(error);
    }
    log::info(format!(
        "caught up: {} differed and {} copied; following again",
        crate::output::count(differing, "key"),
        if differing == 1 { "was" } else { "were" }
    ));
    Stop::Finished
}

/// The pipeline records where following stands in the journal as it goes.
fn settings_with_status(mut settings: PipelineSettings, follower: &Follower) -> PipelineSettings {
    let probe = follower.probe();
    settings.on_journal = Some(Arc::new(move |journal: &Journal| {
        let now = probe.view();
        if probe.following() {
            crate::metrics::set_follow(
                now.pending_keys,
                std::time::Duration::from_millis(now.lag_ms),
            );
        }
        journal.save_follow_view(&now)
    }));
    settings
}
