//! `askiam mcp` as an agent host runs it: a child process speaking MCP (JSON-RPC 2.0, one
//! message per line) on stdin/stdout. The test is the host: initialize, list tools, call them.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Stdio};

use serde_json::{json, Value};
use support::{fixtures, Askiam};

struct Host {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

impl Host {
    fn send(&mut self, msg: Value) {
        writeln!(self.stdin, "{msg}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "askiam mcp closed stdout");
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON-RPC ({e}): {line}"));
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        let r = self.request("tools/call", json!({"name": tool, "arguments": args}));
        assert_ne!(r["isError"], true, "{tool}: {r}");
        let text = r["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{tool}: no text content: {r}"));
        serde_json::from_str(text).unwrap()
    }
}

#[test]
fn an_agent_host_lists_the_tools_and_asks() {
    let a = Askiam::new();
    a.ingest(&[&fixtures()]);
    let mut child = a.cmd().arg("mcp").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut host =
        Host { stdin: child.stdin.take().unwrap(), stdout: BufReader::new(child.stdout.take().unwrap()), next: 0 };
    let init = host.request(
        "initialize",
        json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test-host", "version": "0"}}),
    );
    assert_eq!(init["serverInfo"]["name"], "askiam");
    host.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    let tools = host.request("tools/list", json!({}));
    let mut names: Vec<&str> = tools["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["ask", "search_iam", "validate_entity"]);
    let ask = tools["tools"].as_array().unwrap().iter().find(|t| t["name"] == "ask").unwrap();
    assert!(ask["inputSchema"]["properties"]["message"].is_object(), "{ask}");

    let r = host.call("ask", json!({"message": "I need access to the HR Analyst role", "user": "pchen"}));
    assert_eq!(r["intent"], "request_access");
    assert!(r["answer"].as_str().unwrap().contains("Segregation of duties"), "{r}");
    assert!(r["citations"].as_array().unwrap().iter().any(|c| c["id"] == "role:ROLE-0008"));

    let v = host.call("validate_entity", json!({"name": "payroll administrater"}));
    assert_eq!(v["entities"][0]["id"], "ROLE-0017");
    assert_eq!(v["entities"][0]["valid"], true);
    let v = host.call("validate_entity", json!({"name": "Quantum Ledger Admin"}));
    assert_eq!(v["entities"][0]["valid"], false);
    assert!(!v["closest"].as_array().unwrap().is_empty());

    let hits = host.call("search_iam", json!({"query": "payroll administrator", "k": 3}));
    assert_eq!(hits[0]["id"], "role:ROLE-0017");

    drop(host);
    let status = child.wait().unwrap();
    assert!(status.success(), "askiam mcp exited with {status} after stdin closed");
}
