//! `taskbridge ews decode` over fixtures in the styles of different servers and versions.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn decode(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/ews")
        .join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_taskbridge"))
        .args(["ews", "decode", "--compact"])
        .arg(&path)
        .output()
        .expect("run taskbridge");
    assert!(
        out.status.success(),
        "decode {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn decode_exchange2007_pretty_response_reads_task_fields_and_version() {
    let v = decode("exchange2007-sp1-getitem-response.xml");
    assert_eq!(v["kind"], "response");
    assert_eq!(v["operation"], "GetItemResponse");
    assert_eq!(v["header"]["ServerVersion"]["MajorVersion"], 8);
    let task = &v["body"]["ResponseMessages"][0]["Items"][0];
    assert_eq!(task["Subject"], "Survey: Stake out the north abutment");
    assert_eq!(task["PercentComplete"], 40.0);
    assert_eq!(task["TotalWork"], 240);
    assert_eq!(task["ItemId"]["ChangeKey"], "EwAAABYAAAB3K2cFQQzCQ7o2LJW+");
}

#[test]
fn decode_exchange2010_default_types_namespace_in_header_reads_version_string() {
    let v = decode("exchange2010-sp2-finditem-response.xml");
    assert_eq!(v["header"]["ServerVersion"]["Version"], "Exchange2010_SP2");
    let root = &v["body"]["ResponseMessages"][0]["RootFolder"];
    assert_eq!(root["IncludesLastItemInRange"], true);
    assert_eq!(root["Items"][1]["Kind"], "Message");
}

#[test]
fn decode_one_line_sync_response_lists_each_change() {
    let v = decode("exchange2013-sp1-syncfolderitems-oneline.xml");
    let changes = &v["body"]["ResponseMessages"][0]["Changes"];
    assert_eq!(changes[0]["Update"]["PercentComplete"], 60.0);
    assert_eq!(changes[1]["Delete"]["Id"], "AAMkAGQ1TaskB=");
    assert_eq!(changes[2]["ReadFlagChange"]["IsRead"], true);
}

#[test]
fn decode_push_notification_lists_events_with_watermarks() {
    let v = decode("exchange2016-sendnotification.xml");
    assert_eq!(v["kind"], "notification");
    assert_eq!(v["header"]["RequestServerVersion"], "Exchange2010_SP1");
    let n = &v["body"]["ResponseMessages"][0]["Notification"];
    assert_eq!(n["SubscriptionId"], "FQBleGNoMTYubWFpbC5leGFtcGxlEAAAAJ");
    assert_eq!(n["MoreEvents"], false);
    assert_eq!(n["Events"][0]["Type"], "ModifiedEvent");
    assert_eq!(n["Events"][1]["Type"], "DeletedEvent");
    assert_eq!(n["Events"][1]["Object"]["ItemId"]["Id"], "AAMkAGIzTaskTwo=");
}

#[test]
fn decode_throttling_fault_with_http_500_reports_back_off() {
    let v = decode("exchange2019-fault-server-busy.http");
    assert_eq!(v["http_status"], 500);
    assert_eq!(v["kind"], "fault");
    assert_eq!(v["back_off_ms"], 297749);
    assert_eq!(v["fault"]["FaultCode"], "ErrorServerBusy");
}

#[test]
fn decode_schema_validation_fault_reports_line_and_position() {
    let v = decode("exchange2016-fault-schema-validation.xml");
    assert_eq!(v["fault"]["ResponseCode"], "ErrorSchemaValidation");
    assert_eq!(v["fault"]["Line"], 1);
    assert_eq!(v["fault"]["Position"], 612);
}

#[test]
fn decode_soap_env_prefix_and_default_namespace_root_reads_folder() {
    let v = decode("soap-env-default-namespace-getfolder-response.xml");
    assert_eq!(v["header"]["ServerVersion"]["MajorBuildNumber"], 1118);
    let folder = &v["body"]["ResponseMessages"][0]["Folders"][0];
    assert_eq!(folder["Kind"], "TasksFolder");
    assert_eq!(folder["DisplayName"], "Tasks");
}

#[test]
fn decode_batch_with_stale_change_key_keeps_both_messages() {
    let v = decode("exchange2019-updateitem-conflict-response.xml");
    let msgs = &v["body"]["ResponseMessages"];
    assert_eq!(msgs[0]["ResponseClass"], "Success");
    assert_eq!(msgs[1]["ResponseCode"], "ErrorIrresolvableConflict");
    assert_eq!(msgs[1]["ConflictResults"]["Count"], 1);
}

#[test]
fn decode_unknown_elements_are_skipped_and_per_message_back_off_shown() {
    let v = decode("exchange2019-getitem-unknown-elements.xml");
    let msgs = &v["body"]["ResponseMessages"];
    let task = &msgs[0]["Items"][0];
    assert_eq!(task["Subject"], "Öffnungszeiten prüfen & melden");
    assert_eq!(task["Status"], "WaitingOnOthers");
    assert_eq!(task["Body"]["Text"], "<p>Bitte bis Freitag.</p>");
    assert_eq!(msgs[1]["BackOffMilliseconds"], 4500);
}

#[test]
fn decode_garbage_exits_1_with_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in [
        ("truncated.xml", &b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><m:GetItem"[..]),
        ("doctype.xml", b"<!DOCTYPE x [<!ENTITY a \"b\">]><x>&a;</x>"),
        ("not-soap.xml", b"<html><body>Login</body></html>"),
        ("empty.xml", b""),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_taskbridge"))
            .args(["ews", "decode"])
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}");
    }
}

#[test]
fn decode_an_unmodelled_operation_shows_class_code_text_and_ids() {
    let v = decode("exchange2019-moveitem-response-unmodelled.xml");
    assert_eq!(v["kind"], "response");
    assert_eq!(v["operation"], "MoveItemResponse");
    assert_eq!(v["body"]["generic"], true);
    let messages = &v["body"]["ResponseMessages"];
    assert_eq!(messages[0]["ResponseClass"], "Success");
    assert_eq!(messages[0]["ResponseCode"], "NoError");
    assert_eq!(messages[0]["ids"][0]["element"], "ItemId");
    assert_eq!(messages[0]["ids"][0]["Id"], "AAMkAGMovedTask=");
    assert_eq!(messages[0]["ids"][0]["ChangeKey"], "EwAAABYAAAAMoved1");
    assert_eq!(messages[1]["ResponseClass"], "Error");
    assert_eq!(messages[1]["ResponseCode"], "ErrorItemNotFound");
    assert!(
        messages[1]["MessageText"]
            .as_str()
            .is_some_and(|t| t.starts_with("The specified object was not found"))
    );
    // The whole content is there too, by local name.
    let content = &v["body"]["content"]["ResponseMessages"]["MoveItemResponseMessage"];
    assert_eq!(
        content[0]["Items"]["Task"]["ItemId"]["@Id"],
        "AAMkAGMovedTask="
    );
}

#[test]
fn decode_a_chunked_streaming_capture_decodes_each_envelope() {
    let v = decode("exchange2019-getstreamingevents-chunked.http");
    assert_eq!(v["kind"], "stream");
    assert_eq!(v["http_status"], 200);
    let messages = v["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["operation"], "GetStreamingEventsResponse");
    assert_eq!(messages[0]["header"]["ServerVersion"]["MajorVersion"], 15);
    // GetStreamingEvents is modelled: each envelope decodes to its typed messages.
    let first = &messages[0]["body"]["ResponseMessages"][0];
    assert_eq!(first["ResponseClass"], "Success");
    let notification = &first["Notifications"]["Notifications"][0];
    assert_eq!(notification["SubscriptionId"], "JABzdHJlYW1pbmctc3ViLTE=");
    let event = &notification["Events"][0];
    assert_eq!(event["Type"], "ModifiedEvent");
    assert_eq!(event["Object"]["ItemId"]["Id"], "AAMkAGStreamTaskA=");
    assert_eq!(
        event["Object"]["ItemId"]["ChangeKey"],
        "EwAAABYAAAAStreamA2"
    );
    let second = &messages[1]["body"]["ResponseMessages"][0];
    assert_eq!(second["ConnectionStatus"], "Closed");
}

#[test]
fn decode_refuses_a_generic_message_nested_too_deeply_without_crashing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let depth = 10_000;
    let xml = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:MoveItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">{}{}</m:MoveItemResponse></s:Body></s:Envelope>"#,
        "<m:X>".repeat(depth),
        "</m:X>".repeat(depth)
    );
    let path = dir.path().join("deep.xml");
    std::fs::write(&path, xml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_taskbridge"))
        .args(["ews", "decode"])
        .arg(&path)
        .output()
        .expect("run taskbridge");
    assert_eq!(out.status.code(), Some(1), "a decode error, not a crash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("64 levels"), "{stderr}");
}

#[test]
fn decode_of_an_endless_input_stops_at_the_cap_as_bytes_arrive() {
    use std::io::Write;
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskbridge"))
        .args(["ews", "decode", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskbridge");
    // More than 64 MiB, and the pipe stays open: reading to the end would never finish.
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'<'; 1 << 20];
        for _ in 0..80 {
            if stdin.write_all(&chunk).is_err() {
                return;
            }
        }
        // Held open until the process has gone.
        std::thread::sleep(Duration::from_secs(60));
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("decode still reading an endless input after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(!status.success());
    assert!(stderr.contains("over the limit"), "{stderr}");
    drop(writer);
}
