//! `layer4-namespaces`: Microsoft's layer 4 design with one namespace per workload, on
//! one address. sluice passes TLS through untouched (clients see the servers' own
//! certificates), reads only the server name of each ClientHello, and checks each
//! namespace's workload on each server: OWA out on one server takes that server out of
//! the OWA namespace alone.

use std::sync::Arc;

use sluice_emulator::Version;
use sluice_exchange::Scenario;
use sluice_lab::client::{empty, full};
use sluice_lab::Client;
use sluice_proxy::AccessLog;
use tokio::net::TcpStream;

use super::{array, fail, Story, NOTICE, PROBE};
use crate::lab::setup::{Lab, Ports};

const OWA: &str = "owa.contoso.lab";
const EWS: &str = "ews.contoso.lab";
const CONNECTIONS: usize = 12;

pub async fn run(story: &mut Story) -> Result<(), String> {
    let array = array(&[Version::V2019, Version::V2019, Version::V2019])?;
    let namespaces = vec![
        ("owa".to_string(), OWA.to_string()),
        ("ews".to_string(), EWS.to_string()),
        ("activesync".to_string(), "eas.contoso.lab".to_string()),
    ];
    let config = |s: &crate::lab::setup::Setting| {
        let mut t = s.exchange_template(PROBE);
        t.scenario = Scenario::Layer4 {
            namespaces: namespaces.clone(),
        };
        sluice_exchange::render(&t).map_err(|e| e.to_string())
    };
    let lab = Lab::start(array, Ports::ANY, config, AccessLog::disabled()).await?;
    story.say("Three servers behind `sluice init exchange --scenario l4` with namespaces owa, ews and eas, all on one address:");
    let up = lab
        .wait_for(NOTICE, |lab| {
            ["owa", "ews", "activesync"]
                .iter()
                .all(|p| lab.status(p, "EX1").is_some_and(|s| s.up))
        })
        .await;
    story.check(
        up,
        "every namespace's pool has its servers up (workload checks over TLS)",
    );

    let (mut client, shown) = connect(&lab, OWA).await?;
    let own = lab
        .array
        .servers
        .iter()
        .find(|s| s.certificate().is_some_and(|c| c.der == shown));
    story.check(
        own.is_some(),
        format!(
            "TLS passes through: the client is shown {}'s own certificate",
            own.map_or("no server", |s| s.name())
        ),
    );
    let page = client.get("/owa/healthcheck.htm").await.map_err(fail)?;
    story.check(page.status == 200, "OWA answers through the passthrough");

    story.say("OWA is set inactive on EX1:");
    let ex1 = &lab.array.servers[0];
    ex1.set_active("owa", false);
    let out = lab
        .wait_for(NOTICE, |lab| {
            lab.status("owa", "EX1").is_some_and(|s| !s.up)
        })
        .await;
    story.check(out, "the owa namespace's pool marks EX1 down");
    let others = ["ews", "activesync"]
        .iter()
        .all(|p| lab.status(p, "EX1").is_some_and(|s| s.up));
    story.check(others, "EX1 stays up in the ews and eas namespaces' pools");

    let before = ex1.counts();
    let (owa_failed, ews_failed) = (drive(&lab, OWA).await?, drive(&lab, EWS).await?);
    let after = ex1.counts();
    let (owa_ex1, ews_ex1) = (
        after.of("owa") - before.of("owa"),
        after.of("ews") - before.of("ews"),
    );
    story.check(
        owa_failed == 0 && owa_ex1 == 0,
        format!("{CONNECTIONS} OWA connections: {owa_failed} failed, EX1 got {owa_ex1}"),
    );
    story.check(
        ews_failed == 0 && ews_ex1 > 0,
        format!("{CONNECTIONS} EWS connections: {ews_failed} failed, EX1 served {ews_ex1}"),
    );
    ex1.set_active("owa", true);
    Ok(())
}

/// An HTTPS connection through sluice asking for `name`, trusting any of the array's
/// certificates; also the certificate the server showed.
async fn connect(lab: &Lab, name: &str) -> Result<(Client, Vec<u8>), String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in lab.array.servers.iter().filter_map(|s| s.certificate()) {
        roots.add(cert.cert_der()).map_err(fail)?;
    }
    let mut config =
        tokio_rustls::rustls::ClientConfig::builder_with_provider(sluice_proxy::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(fail)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = lab.addr("exchange").ok_or("no exchange service")?;
    let tcp = TcpStream::connect(addr).await.map_err(fail)?;
    let server_name =
        tokio_rustls::rustls::pki_types::ServerName::try_from(name.to_string()).map_err(fail)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(fail)?;
    let shown = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((Client::over_stream(tls, name).await.map_err(fail)?, shown))
}

/// `CONNECTIONS` new connections to namespace `name`, one request each; those not
/// answered 200.
async fn drive(lab: &Lab, name: &str) -> Result<usize, String> {
    let mut failed = 0;
    for _ in 0..CONNECTIONS {
        let (mut client, _) = connect(lab, name).await?;
        let req = if name == OWA {
            client.request("GET", "/owa/auth/logon.aspx").body(empty())
        } else {
            client
                .request("POST", "/EWS/Exchange.asmx")
                .header("authorization", "Negotiate jdoe")
                .body(full(sluice_emulator::ews::get_folder_request()))
        };
        let answer = client.send(req.map_err(fail)?).await.map_err(fail)?;
        if answer.status != 200 {
            failed += 1;
        }
    }
    Ok(failed)
}
