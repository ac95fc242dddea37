//! A full rebuild never leaves searches unanswered: searches run flat out from another
//! connection while `reindex` builds a new generation and swaps it in.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use askiam::config::Config;
use askiam::index::embedded::EmbeddedIndex;
use askiam::index::{Index, SearchRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_during_a_rebuild_never_fail_or_come_back_empty() {
    let a = support::Askiam::new();
    let drop = a.dir.path().join("drop");
    a.run(&["fixtures", "generate", "--scale", "4", "--out", drop.to_str().unwrap()]);
    a.ingest(&[&drop]);

    let mut config = Config { data_dir: a.data_dir(), ..Default::default() };
    config.embed.provider = "hash".into();
    let writer = askiam::app::writer(&config).await.unwrap();
    let generation = writer.pipeline.index.info().await.unwrap().generation;

    let done = Arc::new(AtomicBool::new(false));
    let (searched, during) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = {
        let (done, searched, during) = (done.clone(), searched.clone(), during.clone());
        let path = config.index_db();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let index = EmbeddedIndex::open_read_only(&path).unwrap();
            let req = SearchRequest { text: "payroll administrator".into(), vector: None, k: 3, ..Default::default() };
            while !done.load(Ordering::SeqCst) {
                let hits = rt.block_on(index.search(&req)).expect("search failed during the rebuild");
                assert!(!hits.is_empty(), "search came back empty during the rebuild");
                searched.fetch_add(1, Ordering::SeqCst);
                if rt.block_on(index.info()).unwrap().generation == generation {
                    during.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    // Let the reader get going, then rebuild twice.
    while searched.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    writer.pipeline.reindex().await.unwrap();
    writer.pipeline.reindex().await.unwrap();
    done.store(true, Ordering::SeqCst);
    reader.join().expect("reader thread");
    assert_eq!(writer.pipeline.index.info().await.unwrap().generation, generation + 2);
    eprintln!(
        "{} searches, {} while generation {generation} was live",
        searched.load(Ordering::SeqCst),
        during.load(Ordering::SeqCst)
    );
    assert!(searched.load(Ordering::SeqCst) > 10);
}
