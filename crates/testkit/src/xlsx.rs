//! Reading an `.xlsx` back in tests: the cells' values (the cached ones of formulas) and
//! formulas with calamine, and what calamine does not expose — a cell's number format, the
//! frozen panes — from the workbook's XML parts.

use std::io::{Cursor, Read};

use calamine::{Data, Range, Reader, Xlsx, open_workbook_from_rs};

/// One sheet of a workbook, read back.
#[derive(Debug)]
pub struct Sheet {
    values: Range<Data>,
    formulas: Range<String>,
    /// `xl/worksheets/sheet1.xml` (the first sheet) and `xl/styles.xml`.
    pub sheet_xml: String,
    pub styles_xml: String,
}

/// Reads the sheet `name` (the workbook's first) of `bytes`; panics when it is no workbook.
pub fn read(bytes: &[u8], name: &str) -> Sheet {
    let mut book: Xlsx<_> =
        open_workbook_from_rs(Cursor::new(bytes.to_vec())).expect("an .xlsx workbook");
    let values = book.worksheet_range(name).expect("the sheet");
    let formulas = book.worksheet_formula(name).expect("the sheet's formulas");
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.to_vec())).expect("a zip");
    let mut part = |name: &str| {
        let mut text = String::new();
        zip.by_name(name)
            .expect("the part")
            .read_to_string(&mut text)
            .expect("UTF-8 XML");
        text
    };
    Sheet {
        values,
        formulas,
        sheet_xml: part("xl/worksheets/sheet1.xml"),
        styles_xml: part("xl/styles.xml"),
    }
}

impl Sheet {
    /// The value at (row, column), 0-based; `Empty` outside the used range.
    pub fn cell(&self, row: u32, col: u32) -> Data {
        self.values
            .get_value((row, col))
            .cloned()
            .unwrap_or(Data::Empty)
    }

    pub fn is_empty(&self, row: u32, col: u32) -> bool {
        self.cell(row, col) == Data::Empty
    }

    /// A text cell; panics on another kind.
    pub fn text(&self, row: u32, col: u32) -> String {
        match self.cell(row, col) {
            Data::String(s) => s,
            other => panic!("({row}, {col}) is {other:?}, not text"),
        }
    }

    /// A number cell; panics on another kind.
    pub fn number(&self, row: u32, col: u32) -> f64 {
        match self.cell(row, col) {
            Data::Float(f) => f,
            Data::Int(i) => i as f64,
            other => panic!("({row}, {col}) is {other:?}, not a number"),
        }
    }

    /// The formula at (row, column) without its `=`; empty when there is none.
    pub fn formula(&self, row: u32, col: u32) -> String {
        self.formulas
            .get_value((row, col))
            .cloned()
            .unwrap_or_default()
    }

    /// The number format code of the cell `reference` (`C9`): its style `<c r="C9" s="N">` →
    /// the `N`th `cellXfs` entry's `numFmtId` → that `numFmt`'s `formatCode` (`General` for 0).
    pub fn num_format(&self, reference: &str) -> String {
        let at = self
            .sheet_xml
            .find(&format!("<c r=\"{reference}\""))
            .unwrap_or_else(|| panic!("no cell {reference}"));
        let tag = &self.sheet_xml[at..at + self.sheet_xml[at..].find('>').unwrap()];
        let style: usize = tag
            .split(" s=\"")
            .nth(1)
            .map_or(0, |s| s[..s.find('"').unwrap()].parse().unwrap());
        let xfs = &self.styles_xml[self.styles_xml.find("<cellXfs").unwrap()..];
        let xf = xfs.split("<xf ").nth(style + 1).unwrap();
        let id = xf.split("numFmtId=\"").nth(1).unwrap();
        let id = &id[..id.find('"').unwrap()];
        if id == "0" {
            return "General".to_owned();
        }
        let def = self
            .styles_xml
            .split(&format!("<numFmt numFmtId=\"{id}\" formatCode=\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no numFmt {id}"));
        def[..def.find('"').unwrap()].to_owned()
    }

    /// The top-left cell of the scrolling pane when panes are frozen (`C9`), else `None`.
    pub fn frozen_at(&self) -> Option<String> {
        let pane = &self.sheet_xml[self.sheet_xml.find("<pane ")?..];
        let pane = &pane[..pane.find("/>")?];
        if !pane.contains("state=\"frozen\"") {
            return None;
        }
        let cell = pane.split("topLeftCell=\"").nth(1)?;
        Some(cell[..cell.find('"')?].to_owned())
    }
}
