//! Shards: one query split over processes by input partition.
//!
//! A query has a fixed number of shards S, recorded in its checkpoint
//! ([`crate::checkpoint::layout`]). Shard s owns every input partition p with
//! `p mod S == s`, partitions added later included, so the assignment needs
//! no coordination: every process computes the same one. Each shard is a
//! whole query over its partitions: its own offset and commit logs, its own
//! Kafka `transactional.id` and Postgres marker key ([`Shard::sink_key`]),
//! its own owner epoch. A process runs the shards `--shard-ids` selects
//! ([`ShardSelection`]); with `auto`, a StatefulSet pod runs the shards
//! whose number modulo `--replicas` is its ordinal.

use crate::error::{Error, Result};

/// One shard of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard's number, `0..count`.
    pub id: u32,
    /// The query's number of shards.
    pub count: u32,
    /// Whether the checkpoint uses the sharded layout (`shards/<s>/`). A
    /// query created before shards existed, or with one shard, keeps its
    /// files at the checkpoint's root and its sink keys unchanged.
    pub sharded_layout: bool,
}

impl Shard {
    /// The one shard of a query in the root layout.
    pub fn whole() -> Self {
        Shard { id: 0, count: 1, sharded_layout: false }
    }

    /// Whether this shard reads `partition`.
    pub fn owns(&self, partition: i32) -> bool {
        partition.rem_euclid(self.count.max(1) as i32) == self.id as i32
    }

    /// The key this shard's writes are known by in the sinks: the Kafka
    /// `transactional.id` and marker key, the Postgres marker and owner row.
    /// The query id in the root layout (so checkpoints from before shards
    /// keep their markers), `<query id>-shard-<s>` in the sharded layout.
    pub fn sink_key(&self, query_id: &str) -> String {
        match self.sharded_layout {
            false => query_id.to_string(),
            true => format!("{query_id}-shard-{}", self.id),
        }
    }

    /// How logs and progress records name the shard (`0/3`).
    pub fn label(&self) -> String {
        format!("{}/{}", self.id, self.count)
    }
}

/// Which shards a process runs (`--shard-ids`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ShardSelection {
    /// Every shard of the query (the default).
    #[default]
    All,
    /// These shard numbers (`--shard-ids 0,2`).
    List(Vec<u32>),
    /// `--shard-ids auto --replicas R`: the shards s with `s mod R == i`,
    /// where i is the StatefulSet ordinal at the end of the host name.
    Auto { replicas: u32 },
}

impl std::fmt::Display for ShardSelection {
    /// As the command line spells it (`all`, `0,2`, `auto --replicas 2`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardSelection::All => f.write_str("all"),
            ShardSelection::List(ids) => f.write_str(&ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
            ShardSelection::Auto { replicas } => write!(f, "auto --replicas {replicas}"),
        }
    }
}

impl ShardSelection {
    /// Parses `--shard-ids` (`all`, `auto` or a list such as `0,2`) with
    /// `--replicas`, which only `auto` uses and which it needs.
    pub fn parse(value: &str, replicas: Option<u32>) -> Result<Self> {
        let option = "--shard-ids";
        let selection = match value.trim() {
            "" | "all" => ShardSelection::All,
            "auto" => match replicas {
                Some(replicas) if replicas > 0 => ShardSelection::Auto { replicas },
                Some(_) => return Err(Error::config("--replicas", "must be at least 1, got 0")),
                None => return Err(Error::config(option, "'auto' needs --replicas R (the StatefulSet's replicas)")),
            },
            list => {
                let mut ids = Vec::new();
                for part in list.split(',') {
                    let id = part.trim().parse::<u32>().map_err(|_| {
                        Error::config(option, format!("'{part}' is not a shard number (give e.g. 0,2, all or auto)"))
                    })?;
                    if ids.contains(&id) {
                        return Err(Error::config(option, format!("shard {id} is named twice")));
                    }
                    ids.push(id);
                }
                ShardSelection::List(ids)
            }
        };
        if replicas.is_some() && !matches!(selection, ShardSelection::Auto { .. }) {
            return Err(Error::config("--replicas", "is only used with --shard-ids auto"));
        }
        Ok(selection)
    }

    /// The shard numbers this process runs out of `count`; `host` is the
    /// host name `auto` reads the pod's ordinal from.
    pub fn resolve(&self, count: u32, host: &str) -> Result<Vec<u32>> {
        let ids: Vec<u32> = match self {
            ShardSelection::All => (0..count).collect(),
            ShardSelection::List(ids) => {
                if let Some(id) = ids.iter().find(|id| **id >= count) {
                    return Err(Error::config(
                        "--shard-ids",
                        format!("shard {id} does not exist: the query has {count} shards (0 to {})", count - 1),
                    ));
                }
                ids.clone()
            }
            ShardSelection::Auto { replicas } => {
                let ordinal = ordinal(host)?;
                if ordinal >= *replicas {
                    return Err(Error::config(
                        "--replicas",
                        format!("this pod's ordinal is {ordinal} (host '{host}'), but --replicas is {replicas}"),
                    ));
                }
                (0..count).filter(|s| s % replicas == ordinal).collect()
            }
        };
        if ids.is_empty() {
            return Err(Error::config(
                "--shard-ids",
                format!("selects no shard of the query's {count} (more replicas than shards?)"),
            ));
        }
        Ok(ids)
    }
}

/// The StatefulSet ordinal at the end of a pod's host name (`sparklet-2`).
fn ordinal(host: &str) -> Result<u32> {
    let short = host.split('.').next().unwrap_or(host);
    short.rsplit_once('-').and_then(|(_, n)| n.parse().ok()).ok_or_else(|| {
        Error::config(
            "--shard-ids",
            format!("'auto' reads the StatefulSet ordinal from the host name, but '{host}' does not end in -<number>"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: u32, count: u32) -> Shard {
        Shard { id, count, sharded_layout: true }
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        for count in 1..5 {
            for p in 0..20 {
                let owners = (0..count).filter(|s| shard(*s, count).owns(p)).count();
                assert_eq!(owners, 1, "partition {p} of {count} shards");
            }
        }
        assert!(shard(1, 3).owns(4) && !shard(1, 3).owns(5));
    }

    #[test]
    fn the_root_layout_keeps_the_query_id_as_sink_key() {
        assert_eq!(Shard::whole().sink_key("q"), "q");
        assert_eq!(shard(2, 3).sink_key("q"), "q-shard-2");
    }

    #[test]
    fn auto_runs_the_shards_of_the_pods_ordinal() {
        let auto = ShardSelection::parse("auto", Some(2)).unwrap();
        assert_eq!(auto.resolve(3, "sparklet-0").unwrap(), vec![0, 2]);
        assert_eq!(auto.resolve(3, "sparklet-1.sparklet.ns.svc").unwrap(), vec![1]);
        assert_eq!(auto.resolve(4, "my-query-sparklet-1").unwrap(), vec![1, 3]);
        let err = auto.resolve(3, "laptop").unwrap_err().to_string();
        assert!(err.contains("--shard-ids") && err.contains("laptop"), "{err}");
        let err = auto.resolve(3, "sparklet-2").unwrap_err().to_string();
        assert!(err.contains("ordinal is 2"), "{err}");
    }

    #[test]
    fn a_list_names_existing_shards_once() {
        assert_eq!(ShardSelection::parse("0, 2", None).unwrap(), ShardSelection::List(vec![0, 2]));
        assert_eq!(ShardSelection::parse("0, 2", None).unwrap().to_string(), "0,2");
        assert_eq!(ShardSelection::parse("auto", Some(3)).unwrap().to_string(), "auto --replicas 3");
        assert_eq!(ShardSelection::parse("all", None).unwrap().resolve(2, "h").unwrap(), vec![0, 1]);
        let err = ShardSelection::parse("0,x", None).unwrap_err().to_string();
        assert!(err.contains("'x' is not a shard number"), "{err}");
        assert!(ShardSelection::parse("1,1", None).unwrap_err().to_string().contains("twice"));
        let err = ShardSelection::parse("3", None).unwrap().resolve(3, "h").unwrap_err().to_string();
        assert!(err.contains("shard 3 does not exist"), "{err}");
        assert!(ShardSelection::parse("auto", None).unwrap_err().to_string().contains("--replicas"));
        assert!(ShardSelection::parse("0", Some(2)).unwrap_err().to_string().contains("--replicas"));
    }
}
