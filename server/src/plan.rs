//! What applying a new configuration would change, worked out before anything is touched.
//!
//! supervisord's `update` restarts whole groups on any change (supervisor #1154, #1637) and
//! `reload` restarts everything (#888). minder compares process by process: a process whose
//! own resolved settings are identical keeps running with the same pid; only processes whose
//! settings changed are restarted. [`plan`] is pure, so the rules are tested without
//! processes; the supervisor carries the plan out.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use minder::config::{Config, ProcessConfig};

/// A process, by group and name.
pub type Key = (String, String);

/// The changes that take the running processes to a configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// New processes, to add (and start if autostart).
    pub add: Vec<Arc<ProcessConfig>>,
    /// Processes whose settings changed: stopped, replaced, started again; with the names of
    /// the options that changed.
    pub change: Vec<(Arc<ProcessConfig>, Vec<String>)>,
    /// Processes no longer configured: stopped and removed.
    pub remove: Vec<Key>,
    /// Processes whose settings are the same: left alone.
    pub keep: Vec<Key>,
    /// Groups that appear or disappear as a whole.
    pub groups_added: Vec<String>,
    pub groups_removed: Vec<String>,
    /// Groups whose own priority changed (nothing is restarted for that).
    pub group_priorities: Vec<(String, i32)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty()
            && self.change.is_empty()
            && self.remove.is_empty()
            && self.groups_added.is_empty()
            && self.groups_removed.is_empty()
            && self.group_priorities.is_empty()
    }
}

/// The options whose values differ between two resolutions of one process.
pub fn changed_options(old: &ProcessConfig, new: &ProcessConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        // Both serialise (they are plain data); if not, treat everything as changed.
        return vec!["*".into()];
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// Works out how to go from `running` (each process's current settings, and each group's
/// priority) to `wanted`. With `only`, just those groups are considered (`update GROUP`).
pub fn plan(
    running: &BTreeMap<Key, Arc<ProcessConfig>>,
    running_groups: &BTreeMap<String, i32>,
    wanted: &Config,
    only: Option<&BTreeSet<String>>,
) -> Plan {
    let in_scope = |group: &str| only.is_none_or(|o| o.contains(group));
    let mut p = Plan::default();
    let mut wanted_keys = BTreeSet::new();
    for g in wanted.groups.iter().filter(|g| in_scope(&g.name)) {
        match running_groups.get(&g.name) {
            None => p.groups_added.push(g.name.clone()),
            Some(&prio) if prio != g.priority => p.group_priorities.push((g.name.clone(), g.priority)),
            Some(_) => {}
        }
        for proc in &g.processes {
            let key = (proc.group.clone(), proc.name.clone());
            wanted_keys.insert(key.clone());
            match running.get(&key) {
                None => p.add.push(proc.clone()),
                Some(old) if **old == **proc => p.keep.push(key),
                Some(old) => p.change.push((proc.clone(), changed_options(old, proc))),
            }
        }
    }
    let wanted_groups: BTreeSet<&str> = wanted.groups.iter().map(|g| g.name.as_str()).collect();
    for key in running.keys().filter(|k| in_scope(&k.0)) {
        if !wanted_keys.contains(key) {
            p.remove.push(key.clone());
        }
    }
    for g in running_groups.keys().filter(|g| in_scope(g)) {
        if !wanted_groups.contains(g.as_str()) {
            p.groups_removed.push(g.clone());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("m.toml");
        std::fs::write(&path, toml).expect("write");
        minder::config::load_with_env(&path, &BTreeMap::new()).expect("valid")
    }

    fn running(c: &Config) -> (BTreeMap<Key, Arc<ProcessConfig>>, BTreeMap<String, i32>) {
        let procs = c
            .groups
            .iter()
            .flat_map(|g| &g.processes)
            .map(|p| ((p.group.clone(), p.name.clone()), Arc::clone(p)))
            .collect();
        let groups = c.groups.iter().map(|g| (g.name.clone(), g.priority)).collect();
        (procs, groups)
    }

    const BASE: &str = r#"
[program.web]
command = "sleep 100"
[program.worker]
command = "sleep 100"
numprocs = 2
process_name = "%(program_name)s_%(process_num)d"
[program.gone]
command = "sleep 100"
[program.api]
command = "sleep 100"
[group.site]
programs = ["api"]
"#;

    #[test]
    fn only_what_changed_is_touched() {
        let old = config(BASE);
        let new = config(
            &(BASE
                .replace("[program.gone]\ncommand = \"sleep 100\"\n", "")
                .replace("[program.web]\ncommand = \"sleep 100\"", "[program.web]\ncommand = \"sleep 200\"")
                + "[program.fresh]\ncommand = \"true\"\n"),
        );
        let (procs, groups) = running(&old);
        let p = plan(&procs, &groups, &new, None);
        assert_eq!(p.add.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["fresh"]);
        assert_eq!(p.change.len(), 1);
        assert_eq!(p.change[0].0.name, "web");
        assert_eq!(p.change[0].1, ["argv", "command"]);
        assert_eq!(p.remove, [("gone".to_string(), "gone".to_string())]);
        let mut kept: Vec<String> = p.keep.iter().map(|k| k.1.clone()).collect();
        kept.sort();
        assert_eq!(
            kept,
            ["api", "worker_0", "worker_1"],
            "unchanged processes, even in a group with changes elsewhere"
        );
        assert_eq!(p.groups_added, ["fresh"]);
        assert_eq!(p.groups_removed, ["gone"]);
    }

    #[test]
    fn an_unchanged_configuration_plans_nothing() {
        let c = config(BASE);
        let (procs, groups) = running(&c);
        let p = plan(&procs, &groups, &c, None);
        assert!(p.is_empty());
        assert_eq!(p.keep.len(), 5);
    }

    #[test]
    fn numprocs_changes_add_and_remove_processes() {
        let old = config(BASE);
        let new = config(&BASE.replace("numprocs = 2", "numprocs = 3"));
        let (procs, groups) = running(&old);
        let p = plan(&procs, &groups, &new, None);
        assert_eq!(p.add.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["worker_2"]);
        assert!(p.change.is_empty(), "worker_0 and worker_1 are unchanged: {:?}", p.change);
        let new = config(&BASE.replace("numprocs = 2", "numprocs = 1"));
        let p = plan(&procs, &groups, &new, None);
        assert_eq!(p.remove, [("worker".to_string(), "worker_1".to_string())]);
    }

    #[test]
    fn update_of_named_groups_leaves_the_rest() {
        let old = config(BASE);
        let new = config(&BASE.replace("sleep 100", "sleep 300"));
        let (procs, groups) = running(&old);
        let only: BTreeSet<String> = ["site".to_string()].into();
        let p = plan(&procs, &groups, &new, Some(&only));
        assert_eq!(p.change.iter().map(|c| c.0.name.as_str()).collect::<Vec<_>>(), ["api"]);
        assert!(p.remove.is_empty() && p.add.is_empty());
    }

    #[test]
    fn a_group_priority_restarts_nothing() {
        let old = config(BASE);
        let new = config(&(BASE.to_string() + "priority = 5\n"));
        let (procs, groups) = running(&old);
        let p = plan(&procs, &groups, &new, None);
        assert_eq!(p.group_priorities, [("site".to_string(), 5)]);
        assert!(p.change.is_empty());
    }
}
