//! A real browser for the dashboard's tests: Debian's Chromium, headless, driven over WebDriver
//! by its ChromeDriver (`fantoccini`, plain HTTP to the driver on loopback: no TLS stack).
//! `cargo xtask test` installs the packages `chromium` and `chromium-driver` when missing.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session with a fresh profile; the driver is killed when dropped.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where downloads land (inside the fresh profile's folder).
    pub downloads: PathBuf,
    _profile: tempdir::Dir,
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A folder under `target/` removed when dropped.
    #[derive(Debug)]
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Dir {
            let path = super::target_dir().join("browser").join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4()
            ));
            std::fs::create_dir_all(&path).expect("create a browser profile folder");
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The workspace's `target/` folder.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .join("target")
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless session; panics with
    /// how to install the browser when it is missing.
    pub async fn start() -> Browser {
        for program in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(program).is_file(),
                "{program} is missing: `cargo xtask test` installs it, or run \
                 `apt-get install -y chromium chromium-driver` as root"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempdir::Dir::new("chromium");
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads folder");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1400,2200",
                    "--lang=vi-VN",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://{addr}"))
            .await
            .expect("a WebDriver session in headless Chromium");
        Browser {
            client,
            driver,
            downloads,
            _profile: profile,
        }
    }

    /// The text of the first element matching `css`, once `ready` accepts it (polled; panics
    /// after `timeout` with the last text seen).
    pub async fn text_when(
        &self,
        css: &str,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = el.text().await {
                    if ready(&text) {
                        return text;
                    }
                    last = Some(text);
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css}: not as expected within {timeout:?}; last text {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the first element matching `css` (panics naming it when there is none).
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} to click: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Runs `script` (a function body that `return`s JSON) in the page; its value.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}: {script}"))
    }

    /// Resizes the window so that the page's viewport (`innerWidth` × `innerHeight`) is
    /// `width` × `height` CSS pixels, whatever the window's own borders.
    pub async fn viewport(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize the window");
        let inner = self.eval("return [innerWidth, innerHeight];").await;
        let (w, h) = (
            inner[0].as_u64().expect("innerWidth") as u32,
            inner[1].as_u64().expect("innerHeight") as u32,
        );
        if (w, h) != (width, height) {
            self.client
                .set_window_size(
                    width + width.saturating_sub(w),
                    height + height.saturating_sub(h),
                )
                .await
                .expect("resize the window");
        }
    }

    /// The bytes of the first finished download whose name ends with `.{ext}` in
    /// [`Browser::downloads`] (polled; panics after `timeout` with the folder's listing).
    /// Chromium writes a `.crdownload` file and renames it when complete.
    pub async fn downloaded(&self, ext: &str, timeout: Duration) -> (String, Vec<u8>) {
        let deadline = Instant::now() + timeout;
        loop {
            let names: Vec<String> = std::fs::read_dir(&self.downloads)
                .expect("read the downloads folder")
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            if let Some(name) = names.iter().find(|n| n.ends_with(&format!(".{ext}"))) {
                let bytes = std::fs::read(self.downloads.join(name)).expect("read the download");
                return (name.clone(), bytes);
            }
            assert!(
                Instant::now() < deadline,
                "no .{ext} download within {timeout:?}; the folder holds {names:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the page under `target/screenshots/{name}.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = target_dir().join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshots folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
