//! A browser for OWA and ECP forms login: one connection and a cookie jar, logging in
//! as the emulated servers expect.

use std::collections::BTreeMap;

use http::StatusCode;
use sluice_lab::client::{empty, full, Reply};
use sluice_lab::Client;

use super::fail;

/// A browser: one connection and a cookie jar.
pub struct Browser {
    client: Client,
    jar: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(client: Client) -> Browser {
        Browser {
            client,
            jar: BTreeMap::new(),
        }
    }

    pub async fn login(&mut self) -> Result<(), String> {
        let form = "destination=%2Fowa%2F&flags=4&username=CONTOSO%5Cjdoe&password=secret";
        let reply = self.post("/owa/auth.owa", form).await?;
        if reply.status != StatusCode::FOUND {
            return Err(format!("login answered {}", reply.status));
        }
        Ok(())
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        let req = self.with_cookies(self.client.request("GET", path));
        self.send(req.body(empty()).map_err(fail)?).await
    }

    pub async fn post(&mut self, path: &str, body: &'static str) -> Result<Reply, String> {
        let req = self.with_cookies(self.client.request("POST", path));
        self.send(req.body(full(body)).map_err(fail)?).await
    }

    fn with_cookies(&self, req: http::request::Builder) -> http::request::Builder {
        if self.jar.is_empty() {
            return req;
        }
        let pairs: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        req.header("cookie", pairs.join("; "))
    }

    async fn send(
        &mut self,
        req: http::Request<sluice_lab::client::Body>,
    ) -> Result<Reply, String> {
        let reply = self.client.send(req).await.map_err(fail)?;
        for set in reply.headers.get_all("set-cookie") {
            let Some((name, value)) = set
                .to_str()
                .ok()
                .and_then(|s| s.split(';').next())
                .and_then(|pair| pair.split_once('='))
            else {
                continue;
            };
            if value.is_empty() {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_string(), value.to_string());
            }
        }
        Ok(reply)
    }
}
