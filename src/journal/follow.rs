//! What a following job (`run --follow`) keeps in the journal: where it
//! stands (the `follow` row, written as it goes, so `status` in another
//! process can tell pending keys, lag and whether the target is in sync),
//! and every gap with the catch-up pass that closed it.

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::now_ms;

use super::{Journal, JournalReader};

/// Where a following job stands (see [`crate::follow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowPhase {
    Scanning,
    Following,
    CatchingUp,
    Stopped,
}

impl FollowPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            FollowPhase::Scanning => "scanning",
            FollowPhase::Following => "following",
            FollowPhase::CatchingUp => "catching_up",
            FollowPhase::Stopped => "stopped",
        }
    }
}

/// The `follow` row: where following stood when last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowRecord {
    pub phase: String,
    pub pending_keys: u64,
    pub lag_ms: u64,
    pub changes_applied: u64,
    pub gaps: u64,
    pub in_sync: bool,
    pub updated_at: i64,
}

/// One gap of a following job and the catch-up that closed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRecord {
    pub kind: String,
    pub reason: String,
    pub at: i64,
    pub caught_up_at: Option<i64>,
    pub keys_differing: Option<u64>,
}

impl Journal {
    /// Moves following to `phase` (the row is created on first use).
    pub fn set_follow_phase(&self, phase: FollowPhase) -> Result<()> {
        self.connection.execute(
            "INSERT INTO follow (id, phase, updated_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, updated_at = excluded.updated_at,
                 in_sync = CASE WHEN excluded.phase = 'following' THEN in_sync ELSE 0 END",
            params![phase.as_str(), now_ms()],
        )?;
        Ok(())
    }

    /// Records where following stands now.
    pub fn save_follow_view(&self, view: &crate::follow::FollowView) -> Result<()> {
        self.connection.execute(
            "UPDATE follow SET pending_keys = ?1, lag_ms = ?2, changes_applied = ?3, gaps = ?4,
                               in_sync = ?5 AND phase = 'following', updated_at = ?6
             WHERE id = 1",
            params![
                view.pending_keys as i64,
                view.lag_ms as i64,
                view.changes_applied as i64,
                view.gaps as i64,
                view.in_sync,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Gaps recorded by earlier runs of the job.
    pub fn follow_gap_count(&self) -> Result<u64> {
        let count: i64 =
            self.connection
                .query_row("SELECT COUNT(*) FROM follow_gaps", [], |row| row.get(0))?;
        Ok(count as u64)
    }

    /// Records a gap as its catch-up starts; returns its id.
    pub fn record_follow_gap(&self, gap: &crate::follow::gaps::Gap) -> Result<i64> {
        self.connection.execute(
            "INSERT INTO follow_gaps (kind, reason, at) VALUES (?1, ?2, ?3)",
            params![gap.kind.as_str(), gap.reason, gap.at],
        )?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Records that the catch-up of gap `id` finished.
    pub fn close_follow_gap(&self, id: i64, keys_differing: u64) -> Result<()> {
        self.connection.execute(
            "UPDATE follow_gaps SET caught_up_at = ?1, keys_differing = ?2 WHERE id = ?3",
            params![now_ms(), keys_differing as i64, id],
        )?;
        Ok(())
    }

    /// The follow row.
    pub fn follow(&self) -> Result<Option<FollowRecord>> {
        read_follow(&self.connection)
    }
}

impl JournalReader {
    /// The follow row of a job that follows.
    pub fn follow(&self) -> Result<Option<FollowRecord>> {
        read_follow(self.connection())
    }

    /// Every gap of a following job, oldest first.
    pub fn follow_gaps(&self) -> Result<Vec<GapRecord>> {
        read_follow_gaps(self.connection())
    }
}

fn read_follow(connection: &Connection) -> Result<Option<FollowRecord>> {
    Ok(connection
        .query_row(
            "SELECT phase, pending_keys, lag_ms, changes_applied, gaps, in_sync, updated_at
             FROM follow WHERE id = 1",
            [],
            |row| {
                Ok(FollowRecord {
                    phase: row.get(0)?,
                    pending_keys: row.get::<_, i64>(1)? as u64,
                    lag_ms: row.get::<_, i64>(2)? as u64,
                    changes_applied: row.get::<_, i64>(3)? as u64,
                    gaps: row.get::<_, i64>(4)? as u64,
                    in_sync: row.get(5)?,
                    updated_at: row.get(6)?,
                })
            },
        )
        .optional()?)
}

fn read_follow_gaps(connection: &Connection) -> Result<Vec<GapRecord>> {
    let mut statement = connection.prepare(
        "SELECT kind, reason, at, caught_up_at, keys_differing FROM follow_gaps ORDER BY id",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(GapRecord {
            kind: row.get(0)?,
            reason: row.get(1)?,
            at: row.get(2)?,
            caught_up_at: row.get(3)?,
            keys_differing: row.get::<_, Option<i64>>(4)?.map(|k| k as u64),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
