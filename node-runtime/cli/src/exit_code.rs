//! The CLI's exit codes: how a task's status or a process's ending becomes
//! the code `rauha` exits with, so that scripts can branch on it the way they
//! would on the command run without rauha.

use rauha_api::v1;
use rauha_spec::TaskStatus;

/// The task ran past its timeout (as `timeout(1)` reports it).
pub const TIMED_OUT: u8 = 124;
/// Rauha itself failed: daemon unreachable, bad input, a refused request, or
/// a task with status `error`.
pub const RAUHA_ERROR: u8 = 125;
/// The kernel's OOM killer ended the task (128 + SIGKILL).
pub const OOM_KILLED: u8 = 137;
/// A task that exited 0 but failed: its changes could not be committed.
pub const COMMIT_FAILED: u8 = 1;

/// The exit codes as `rauha sandbox --help` lists them.
pub const SANDBOX_HELP: &str = "\
Exit codes:
  N      succeeded or failed: the task's own exit code
  1      the task exited 0 but its --on-success commit failed (nothing applied)
  128+S  killed by signal S
  124    timed out
  137    killed by the OOM killer
  125    rauha error (daemon unreachable, bad input, refused request, task status error or interrupted, a lost connection to rauhad)
  2      usage error";

/// The exit code for a finished task.
///
/// `exit_code` and `signal` are the task's; a killed task without a signal
/// falls back to its exit code (which rauhad already sets to 128 + signal).
pub fn for_task(status: TaskStatus, exit_code: Option<i32>, signal: Option<i32>) -> u8 {
    match status {
        TaskStatus::Succeeded => exit_code.map_or(RAUHA_ERROR, clamp),
        // A failed task never exits 0: one whose own code was 0 failed
        // after it (its commit).
        TaskStatus::Failed => match exit_code {
            Some(0) => COMMIT_FAILED,
            Some(c) => clamp(c),
            None => RAUHA_ERROR,
        },
        TaskStatus::Killed => signal
            .map(for_signal)
            .or(exit_code.map(clamp))
            .unwrap_or(RAUHA_ERROR),
        TaskStatus::TimedOut => TIMED_OUT,
        TaskStatus::OomKilled => OOM_KILLED,
        TaskStatus::Error | TaskStatus::Interrupted => RAUHA_ERROR,
    }
}

/// The exit code of a process that ended, or `None` when rauhad does not
/// know it (the process is still running, or was lost).
pub fn for_process(process: &v1::Process) -> Option<u8> {
    if process.signal != 0 {
        Some(for_signal(process.signal))
    } else if process.has_exit_code {
        Some(clamp(process.exit_code))
    } else {
        None
    }
}

/// 128 + the signal's number, as a shell reports a process killed by it.
fn for_signal(signal: i32) -> u8 {
    clamp(signal.saturating_add(128))
}

/// An exit status outside 0-255 cannot be passed on; report it as rauha's.
fn clamp(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(RAUHA_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeded_and_failed_pass_the_exit_code_through() {
        assert_eq!(for_task(TaskStatus::Succeeded, Some(0), None), 0);
        assert_eq!(for_task(TaskStatus::Failed, Some(3), None), 3);
        assert_eq!(for_task(TaskStatus::Failed, Some(255), None), 255);
    }

    #[test]
    fn a_failed_task_never_exits_0() {
        // It exited 0, and its commit failed.
        assert_eq!(for_task(TaskStatus::Failed, Some(0), None), COMMIT_FAILED);
        assert_ne!(COMMIT_FAILED, 0);
    }

    #[test]
    fn killed_is_128_plus_the_signal() {
        assert_eq!(for_task(TaskStatus::Killed, Some(143), Some(15)), 143);
        assert_eq!(for_task(TaskStatus::Killed, None, Some(9)), 137);
        assert_eq!(for_task(TaskStatus::Killed, Some(130), None), 130);
    }

    #[test]
    fn rauha_outcomes_have_fixed_codes() {
        assert_eq!(for_task(TaskStatus::TimedOut, Some(137), Some(9)), 124);
        assert_eq!(for_task(TaskStatus::OomKilled, Some(137), Some(9)), 137);
        assert_eq!(for_task(TaskStatus::Error, None, None), 125);
    }

    #[test]
    fn impossible_codes_become_rauha_errors() {
        assert_eq!(for_task(TaskStatus::Failed, None, None), 125);
        assert_eq!(for_task(TaskStatus::Failed, Some(-1), None), 125);
        assert_eq!(for_task(TaskStatus::Failed, Some(256), None), 125);
    }

    #[test]
    fn processes_map_like_tasks() {
        let exited = |code: Option<i32>, signal: i32| v1::Process {
            has_exit_code: code.is_some(),
            exit_code: code.unwrap_or_default(),
            signal,
            ..v1::Process::default()
        };
        assert_eq!(for_process(&exited(Some(0), 0)), Some(0));
        assert_eq!(for_process(&exited(Some(4), 0)), Some(4));
        assert_eq!(for_process(&exited(Some(137), 9)), Some(137));
        assert_eq!(for_process(&exited(None, 15)), Some(143));
        assert_eq!(for_process(&exited(None, 0)), None);
    }
}
