//! SOAP Autodiscover's GetUserSettings on the wire: the requests taskbridge writes (one user for
//! the EWS URL, many for GroupingInformation) and the simulator's answers (over a real socket,
//! with GroupingInformation, an unknown user and a setting it does not serve) validate against
//! `fixtures/autodiscover/getusersettings-subset.xsd`, written from Microsoft's element
//! reference because the official Autodiscover schema is not in the EWS schema folder. The
//! hand-written answer `getusersettings-groupings-response.xml` validates too, and the client
//! reads the groups from it; a message with its elements out of order does not validate, so the
//! check can fail.

mod external;
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{sim_config, start_sim};
use taskbridge::ews::autodiscover::soap;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/autodiscover")
        .join(name)
}

/// Validates the body of the envelope `xml` against the subset schema; the error is xmllint's.
fn validate(xml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let envelope = dir.path().join("envelope.xml");
    std::fs::write(&envelope, xml).expect("write");
    let body = Command::new("xsltproc")
        .arg(fixture("body-child.xsl"))
        .arg(&envelope)
        .output()
        .expect("xsltproc");
    assert!(body.status.success(), "xsltproc failed on {xml}");
    let body_file = dir.path().join("body.xml");
    std::fs::write(&body_file, &body.stdout).expect("write");
    let out = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(fixture("getusersettings-subset.xsd"))
        .arg(&body_file)
        .output()
        .expect("xmllint");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&body.stdout)
        ))
    }
}

fn tools() -> bool {
    external::schema_tools(
        "SOAP Autodiscover messages against fixtures/autodiscover/getusersettings-subset.xsd",
    )
}

#[test]
fn the_requests_validate_and_a_shuffled_one_does_not() {
    if !tools() {
        return;
    }
    let url = "https://mail.fabrikam.com/autodiscover/autodiscover.svc";
    let one = soap::request_envelope("ann@fabrikam.com", url);
    validate(&one).unwrap_or_else(|e| panic!("{e}"));
    let many: Vec<String> = (0..100).map(|i| format!("user{i}@fabrikam.com")).collect();
    let grouping = soap::grouping_request_envelope(&many, url);
    validate(&grouping).unwrap_or_else(|e| panic!("{e}"));
    // RequestedSettings before Users is not the schema's order.
    let (users_start, users_end) = (
        grouping.find("<a:Users>").expect("Users"),
        grouping.find("</a:Users>").expect("Users end") + "</a:Users>".len(),
    );
    let users = &grouping[users_start..users_end];
    let settings_end =
        grouping.find("</a:RequestedSettings>").expect("settings") + "</a:RequestedSettings>".len();
    let shuffled = format!(
        "{}{}{}{}",
        &grouping[..users_start],
        &grouping[users_end..settings_end],
        users,
        &grouping[settings_end..]
    );
    assert!(
        validate(&shuffled).is_err(),
        "out of order must not validate"
    );
}

#[test]
fn the_hand_written_answer_validates_and_gives_one_group_of_two() {
    let text = std::fs::read_to_string(fixture("getusersettings-groupings-response.xml"))
        .expect("fixture");
    external::assert_well_formed(&[fixture("getusersettings-groupings-response.xml")]);
    let asked: Vec<String> = [
        "ann@fabrikam.com",
        "bob@fabrikam.com",
        "nobody@fabrikam.com",
    ]
    .map(String::from)
    .to_vec();
    let found = soap::read_groupings(text.as_bytes(), &asked).expect("read");
    assert_eq!(found[0].key(), found[1].key(), "{found:?}");
    assert_eq!(
        found[0].key().as_deref(),
        Some("FABRIKAM-MBX-SITE1|https://mail.fabrikam.com/EWS/Exchange.asmx")
    );
    assert_eq!(found[2].key(), None);
    assert_eq!(found[2].error.as_deref(), Some("InvalidUser"));
    if tools() {
        validate(&text).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn the_simulators_answers_validate() {
    let mut config = sim_config();
    config.backends = 2;
    let sim = start_sim(config).await;
    sim.move_mailbox("bob@example.com", 1).expect("move");
    let url = reqwest::Url::parse(&sim.url)
        .expect("url")
        .join("/autodiscover/autodiscover.svc")
        .expect("join")
        .to_string();
    let http = reqwest::Client::new();
    let ask = async |body: String| {
        http.post(&url)
            .header("content-type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{}\"", soap::ACTION))
            .body(body)
            .send()
            .await
            .expect("POST")
            .text()
            .await
            .expect("body")
    };
    let asked: Vec<String> = ["ann@example.com", "bob@example.com", "nobody@example.com"]
        .map(String::from)
        .to_vec();
    let groupings = ask(soap::grouping_request_envelope(&asked, &url)).await;
    let found = soap::read_groupings(groupings.as_bytes(), &asked).expect("read");
    assert_eq!(found[1].grouping.as_deref(), Some("MBX02"), "{groupings}");
    assert_eq!(found[2].error.as_deref(), Some("InvalidUser"));
    // A setting the simulator does not serve is listed as an error.
    let mut unserved = soap::request_envelope("ann@example.com", &url);
    unserved = unserved.replace(
        "<a:Setting>ExternalEwsUrl</a:Setting>",
        "<a:Setting>ExternalEwsUrl</a:Setting><a:Setting>UserDisplayName</a:Setting>",
    );
    let with_error = ask(unserved).await;
    assert!(with_error.contains("SettingIsNotAvailable"), "{with_error}");
    let invalid = ask("<x/>".into()).await;
    assert!(invalid.contains("InvalidRequest"), "{invalid}");
    if tools() {
        for answer in [&groupings, &with_error, &invalid] {
            validate(answer).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    sim.shutdown().await;
}
