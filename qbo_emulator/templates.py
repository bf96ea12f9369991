"""Entity templates: genuine QBO objects, one per entity.

Copied from ``reference/samples/entities/<Entity>.json`` (provenance in that
folder's README: recorded sandbox bodies where they exist, Intuit API-reference
samples otherwise).  The generator and the create path start from these, so
emulated objects carry the same fields, nesting and key order as real ones.
Kept as JSON text so the key order survives exactly; parsed once at import.
"""

from __future__ import annotations

import orjson

_RAW: dict[str, str] = {}

_RAW["Account"] = r"""{
 "Name": "Accounts Receivable_ae079",
 "SubAccount": false,
 "Description": "Updated @ 2015-09-10T11:15:59-05:00",
 "FullyQualifiedName": "Accounts Receivable_ae079",
 "Active": true,
 "Classification": "Asset",
 "AccountType": "Accounts Receivable",
 "AccountSubType": "AccountsReceivable",
 "CurrentBalance": -646.8,
 "CurrentBalanceWithSubAccounts": -646.8,
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "domain": "QBO",
 "sparse": false,
 "Id": "13320",
 "SyncToken": "1",
 "MetaData": {
  "CreateTime": "2015-09-10T05:23:47-07:00",
  "LastUpdatedTime": "2015-09-10T12:44:57-07:00"
 }
}"""

_RAW["Bill"] = r"""{
 "SyncToken": "2",
 "domain": "QBO",
 "APAccountRef": {
  "name": "Accounts Payable (A/P)",
  "value": "33"
 },
 "VendorRef": {
  "name": "Norton Lumber and Building Materials",
  "value": "46"
 },
 "TxnDate": "2014-11-06",
 "TotalAmt": 103.55,
 "CurrencyRef": {
  "name": "United States Dollar",
  "value": "USD"
 },
 "LinkedTxn": [
  {
   "TxnId": "118",
   "TxnType": "BillPaymentCheck"
  }
 ],
 "SalesTermRef": {
  "value": "3"
 },
 "DueDate": "2014-12-06",
 "sparse": false,
 "Line": [
  {
   "DetailType": "AccountBasedExpenseLineDetail",
   "Amount": 103.55,
   "Id": "1",
   "AccountBasedExpenseLineDetail": {
    "TaxCodeRef": {
     "value": "TAX"
    },
    "AccountRef": {
     "name": "Job Expenses:Job Materials:Decks and Patios",
     "value": "64"
    },
    "BillableStatus": "Billable",
    "CustomerRef": {
     "name": "Travis Waldron",
     "value": "26"
    }
   },
   "Description": "Lumber"
  }
 ],
 "Balance": 0,
 "Id": "25",
 "MetaData": {
  "CreateTime": "2014-11-06T15:37:25-08:00",
  "LastUpdatedTime": "2015-02-09T10:11:11-08:00"
 }
}"""

_RAW["BillPayment"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "VendorRef": {
  "name": "Bob's Burger Joint",
  "value": "56"
 },
 "TxnDate": "2015-07-14",
 "TotalAmt": 200.0,
 "PayType": "Check",
 "PrivateNote": "Acct. 1JK90",
 "sparse": false,
 "Line": [
  {
   "Amount": 200.0,
   "LinkedTxn": [
    {
     "TxnId": "234",
     "TxnType": "Bill"
    }
   ]
  }
 ],
 "Id": "236",
 "CheckPayment": {
  "PrintStatus": "NeedToPrint",
  "BankAccountRef": {
   "name": "Checking",
   "value": "35"
  }
 },
 "MetaData": {
  "CreateTime": "2015-07-14T12:34:04-07:00",
  "LastUpdatedTime": "2015-07-14T12:34:04-07:00"
 }
}"""

_RAW["Class"] = r"""{
 "Name": "Adidas",
 "SubClass": false,
 "FullyQualifiedName": "Adidas",
 "Active": true,
 "domain": "QBO",
 "sparse": false,
 "Id": "5000000000000085682",
 "SyncToken": "0",
 "MetaData": {
  "CreateTime": "2018-10-31T05:19:54-07:00",
  "LastUpdatedTime": "2018-10-31T05:19:54-07:00"
 }
}"""

_RAW["CompanyCurrency"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "Code": "EUR",
 "Name": "Euro",
 "sparse": false,
 "Active": true,
 "Id": "2",
 "MetaData": {
  "CreateTime": "2015-06-05T13:59:42-07:00",
  "LastUpdatedTime": "2015-06-05T13:59:42-07:00"
 }
}"""

_RAW["CreditMemo"] = r"""{
 "TxnDate": "2014-09-02",
 "domain": "QBO",
 "PrintStatus": "NeedToPrint",
 "TotalAmt": 100.0,
 "RemainingCredit": 0,
 "Line": [
  {
   "Description": "Pest Control Services",
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "TaxCodeRef": {
     "value": "NON"
    },
    "Qty": 1,
    "UnitPrice": 100,
    "ItemRef": {
     "name": "Pest Control",
     "value": "10"
    }
   },
   "LineNum": 1,
   "Amount": 100.0,
   "Id": "1"
  },
  {
   "DetailType": "SubTotalLineDetail",
   "Amount": 100.0,
   "SubTotalLineDetail": {}
  }
 ],
 "ApplyTaxAfterDiscount": false,
 "DocNumber": "1026",
 "sparse": false,
 "CustomerMemo": {
  "value": "Updated customer memo."
 },
 "ProjectRef": {
  "value": "39298034"
 },
 "Balance": 0,
 "CustomerRef": {
  "name": "Amy's Bird Sanctuary",
  "value": "1"
 },
 "TxnTaxDetail": {
  "TotalTax": 0
 },
 "SyncToken": "3",
 "CustomField": [
  {
   "DefinitionId": "1",
   "Type": "StringType",
   "Name": "Crew #"
  }
 ],
 "ShipAddr": {
  "CountrySubDivisionCode": "CA",
  "City": "Bayshore",
  "PostalCode": "94326",
  "Id": "108",
  "Line1": "4581 Finch St."
 },
 "EmailStatus": "NotSet",
 "BillAddr": {
  "Line4": "Bayshore, CA  94326",
  "Line3": "4581 Finch St.",
  "Id": "79",
  "Line1": "Amy Lauterbach",
  "Line2": "Amy's Bird Sanctuary"
 },
 "MetaData": {
  "CreateTime": "2014-09-18T12:51:27-07:00",
  "LastUpdatedTime": "2015-07-01T09:16:28-07:00"
 },
 "BillEmail": {
  "Address": "Birds@Intuit.com"
 },
 "Id": "73"
}"""

_RAW["Customer"] = r"""{
 "Taxable": true,
 "BillAddr": {
  "Id": "6",
  "Line1": "25 Court St.",
  "City": "Tucson",
  "CountrySubDivisionCode": "AZ",
  "PostalCode": "85719",
  "Lat": "32.2841116",
  "Long": "-110.9744298"
 },
 "ShipAddr": {
  "Id": "6",
  "Line1": "25 Court St.",
  "City": "Tucson",
  "CountrySubDivisionCode": "AZ",
  "PostalCode": "85719",
  "Lat": "32.2841116",
  "Long": "-110.9744298"
 },
 "Job": false,
 "BillWithParent": false,
 "Balance": 0,
 "BalanceWithJobs": 0,
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "PreferredDeliveryMethod": "Print",
 "domain": "QBO",
 "sparse": false,
 "Id": "5",
 "SyncToken": "1",
 "MetaData": {
  "CreateTime": "2015-10-01T16:54:59-07:00",
  "LastUpdatedTime": "2016-08-27T01:37:57-07:00"
 },
 "GivenName": "Peter",
 "FamilyName": "Dukes",
 "FullyQualifiedName": "Dukes Basketball Camp",
 "CompanyName": "Dukes Basketball Camp",
 "DisplayName": "Dukes Basketball Camp",
 "PrintOnCheckName": "Dukes Basketball Camp",
 "Active": true,
 "PrimaryPhone": {
  "FreeFormNumber": "(520) 420-5638"
 },
 "PrimaryEmailAddr": {
  "Address": "Dukes_bball@intuit.com"
 },
 "DefaultTaxCodeRef": {
  "value": "2"
 }
}"""

_RAW["Department"] = r"""{
 "Name": "Bebe Rexha",
 "SubDepartment": false,
 "FullyQualifiedName": "Bebe Rexha",
 "Active": true,
 "domain": "QBO",
 "sparse": false,
 "Id": "7",
 "SyncToken": "0",
 "MetaData": {
  "CreateTime": "2019-02-22T23:26:31-08:00",
  "LastUpdatedTime": "2019-02-22T23:26:31-08:00"
 }
}"""

_RAW["Deposit"] = r"""{
 "DepositToAccountRef": {
  "value": "411",
  "name": "BankAccount98ab4"
 },
 "CashBack": {
  "AccountRef": {
   "value": "194",
   "name": "Bank (1067562021)"
  },
  "Amount": 5.0,
  "Memo": "testLinkedTxn"
 },
 "TotalAmt": 6.0,
 "HomeTotalAmt": 6.0,
 "domain": "QBO",
 "sparse": false,
 "Id": "971",
 "SyncToken": "219",
 "MetaData": {
  "CreateTime": "2015-08-24T13:47:42-07:00",
  "LastUpdatedTime": "2015-08-24T13:47:42-07:00"
 },
 "TxnDate": "2015-08-24",
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "ExchangeRate": 1,
 "Line": [
  {
   "Id": "1",
   "LineNum": 1,
   "Amount": 11.0,
   "DetailType": "DepositLineDetail",
   "DepositLineDetail": {
    "AccountRef": {
     "value": "94",
     "name": "Acct1044418638944214883"
    },
    "PaymentMethodRef": {
     "value": "1",
     "name": "Cash"
    }
   }
  }
 ]
}"""

_RAW["Employee"] = r"""{
 "BillableTime": false,
 "BirthDate": "1984-10-02",
 "HiredDate": "2015-09-08",
 "domain": "QBO",
 "sparse": false,
 "Id": "54",
 "SyncToken": "1",
 "MetaData": {
  "CreateTime": "2015-10-07T11:21:28-07:00",
  "LastUpdatedTime": "2015-10-07T11:46:26-07:00"
 },
 "GivenName": "John",
 "FamilyName": "Johnson",
 "DisplayName": "John Johnson",
 "PrintOnCheckName": "John Johnson",
 "Active": true,
 "PrimaryPhone": {
  "FreeFormNumber": "(540) 555-9645"
 }
}"""

_RAW["Estimate"] = r"""{
 "domain": "QBO",
 "sparse": false,
 "Id": "48",
 "SyncToken": "0",
 "MetaData": {
  "CreateTime": "2015-10-07T11:42:38-07:00",
  "LastUpdatedTime": "2015-10-07T11:43:20-07:00"
 },
 "CustomField": [
  {
   "DefinitionId": "1",
   "Name": "Crew #",
   "Type": "StringType"
  }
 ],
 "DocNumber": "1001",
 "TxnDate": "2015-10-05",
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "TxnStatus": "Closed",
 "LinkedTxn": [
  {
   "TxnId": "49",
   "TxnType": "Invoice"
  }
 ],
 "Line": [
  {
   "Id": "1",
   "LineNum": 1,
   "Description": "Custom Design",
   "Amount": 300.0,
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "ItemRef": {
     "value": "4",
     "name": "Design"
    },
    "UnitPrice": 75,
    "Qty": 4,
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  },
  {
   "Id": "2",
   "LineNum": 2,
   "Description": "Installation of landscape design",
   "Amount": 250.0,
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "ItemRef": {
     "value": "7",
     "name": "Installation"
    },
    "UnitPrice": 50,
    "Qty": 5,
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  },
  {
   "Id": "3",
   "LineNum": 3,
   "Description": "Rock Fountain",
   "Amount": 275.0,
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "ItemRef": {
     "value": "5",
     "name": "Rock Fountain"
    },
    "UnitPrice": 275,
    "Qty": 1,
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  },
  {
   "Id": "4",
   "LineNum": 4,
   "Description": "Garden Rocks",
   "Amount": 180.0,
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "ItemRef": {
     "value": "13",
     "name": "Rocks"
    },
    "UnitPrice": 22.5,
    "Qty": 8,
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  },
  {
   "Amount": 1005.0,
   "DetailType": "SubTotalLineDetail",
   "SubTotalLineDetail": {}
  }
 ],
 "TxnTaxDetail": {
  "TotalTax": 0
 },
 "CustomerRef": {
  "value": "18",
  "name": "Paulsen Medical Supplies"
 },
 "CustomerMemo": {
  "value": "Thank you for your business and have a great day!"
 },
 "BillAddr": {
  "Id": "67",
  "Line1": "Kathy Paulsen",
  "Line2": "Paulsen Medical Supplies",
  "Line3": "900 Main St.",
  "Line4": "Middlefield, CA  94303",
  "Lat": "37.4530553",
  "Long": "-122.1178261"
 },
 "ShipAddr": {
  "Id": "19",
  "Line1": "38921 S. Boise Ave",
  "City": "Middlefield",
  "CountrySubDivisionCode": "CA",
  "PostalCode": "94304",
  "Lat": "37.3989376",
  "Long": "-122.1443935"
 },
 "TotalAmt": 1005.0,
 "ApplyTaxAfterDiscount": false,
 "PrintStatus": "NeedToPrint",
 "EmailStatus": "NeedToSend",
 "BillEmail": {
  "Address": "Medical@intuit.com"
 },
 "DeliveryInfo": {
  "DeliveryType": "Email"
 }
}"""

_RAW["Invoice"] = r"""{
 "AllowIPNPayment": false,
 "AllowOnlinePayment": false,
 "AllowOnlineCreditCardPayment": false,
 "AllowOnlineACHPayment": false,
 "domain": "QBO",
 "sparse": false,
 "Id": "266",
 "SyncToken": "0",
 "MetaData": {
  "CreateTime": "2020-09-29T05:58:07-07:00",
  "LastUpdatedTime": "2020-09-29T05:58:07-07:00"
 },
 "CustomField": [
  {
   "DefinitionId": "1",
   "Name": "Crew #",
   "Type": "StringType"
  }
 ],
 "DocNumber": "1043",
 "TxnDate": "2020-09-29",
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "LinkedTxn": [],
 "Line": [
  {
   "Id": "1",
   "LineNum": 1,
   "Amount": 100.0,
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "ItemRef": {
     "value": "1",
     "name": "Services"
    },
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  },
  {
   "Amount": 100.0,
   "DetailType": "SubTotalLineDetail",
   "SubTotalLineDetail": {}
  }
 ],
 "TxnTaxDetail": {
  "TotalTax": 0
 },
 "CustomerRef": {
  "value": "1",
  "name": "Amy's Bird Sanctuary"
 },
 "BillAddr": {
  "Id": "2",
  "Line1": "4581 Finch St.",
  "City": "Bayshore",
  "CountrySubDivisionCode": "CA",
  "PostalCode": "94326",
  "Lat": "INVALID",
  "Long": "INVALID"
 },
 "ShipAddr": {
  "Id": "2",
  "Line1": "4581 Finch St.",
  "City": "Bayshore",
  "CountrySubDivisionCode": "CA",
  "PostalCode": "94326",
  "Lat": "INVALID",
  "Long": "INVALID"
 },
 "DueDate": "2020-10-29",
 "TotalAmt": 100.0,
 "ApplyTaxAfterDiscount": false,
 "PrintStatus": "NeedToPrint",
 "EmailStatus": "NotSet",
 "Balance": 100.0
}"""

_RAW["Item"] = r"""{
 "Name": "Pump",
 "Description": "Fountain Pump",
 "Active": true,
 "FullyQualifiedName": "Pump",
 "Taxable": true,
 "UnitPrice": 15,
 "Type": "Inventory",
 "IncomeAccountRef": {
  "value": "79",
  "name": "Sales of Product Income"
 },
 "PurchaseDesc": "Fountain Pump",
 "PurchaseCost": 10,
 "ExpenseAccountRef": {
  "value": "80",
  "name": "Cost of Goods Sold"
 },
 "AssetAccountRef": {
  "value": "81",
  "name": "Inventory Asset"
 },
 "TrackQtyOnHand": true,
 "QtyOnHand": 25,
 "InvStartDate": "2017-01-31",
 "domain": "QBO",
 "sparse": false,
 "Id": "11",
 "SyncToken": "3",
 "MetaData": {
  "CreateTime": "2017-01-28T10:46:45-08:00",
  "LastUpdatedTime": "2017-01-31T13:16:17-08:00"
 }
}"""

_RAW["JournalEntry"] = r"""{
 "Adjustment": false,
 "domain": "QBO",
 "sparse": false,
 "Id": "1451",
 "SyncToken": "0",
 "MetaData": {
  "CreateTime": "2019-12-18T00:54:13-08:00",
  "LastUpdatedTime": "2019-12-18T00:54:13-08:00"
 },
 "DocNumber": "309",
 "TxnDate": "2019-09-25",
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "ExchangeRate": 1,
 "PrivateNote": "Journal Entry created for date 2019-09-25 for employeeadmin1@fyleforqbodemo.com",
 "Line": [
  {
   "Id": "0",
   "Description": "AMAZON",
   "Amount": 17.99,
   "DetailType": "JournalEntryLineDetail",
   "JournalEntryLineDetail": {
    "PostingType": "Credit",
    "Entity": {
     "Type": "Employee",
     "EntityRef": {
      "value": "67",
      "name": "Shwetabh Kumar"
     }
    },
    "AccountRef": {
     "value": "144",
     "name": "Master Card"
    },
    "DepartmentRef": {
     "value": "4",
     "name": "FAE"
    }
   }
  },
  {
   "Id": "1",
   "Description": "AMAZON",
   "Amount": 368.37,
   "DetailType": "JournalEntryLineDetail",
   "JournalEntryLineDetail": {
    "PostingType": "Credit",
    "Entity": {
     "Type": "Employee",
     "EntityRef": {
      "value": "67",
      "name": "Shwetabh Kumar"
     }
    },
    "AccountRef": {
     "value": "144",
     "name": "Master Card"
    },
    "DepartmentRef": {
     "value": "8",
     "name": "Chase Ortega"
    }
   }
  },
  {
   "Id": "2",
   "Description": "AMAZON",
   "Amount": 17.99,
   "DetailType": "JournalEntryLineDetail",
   "JournalEntryLineDetail": {
    "PostingType": "Debit",
    "Entity": {
     "Type": "Employee",
     "EntityRef": {
      "value": "67",
      "name": "Shwetabh Kumar"
     }
    },
    "AccountRef": {
     "value": "146",
     "name": "Recharges"
    },
    "DepartmentRef": {
     "value": "4",
     "name": "FAE"
    }
   }
  },
  {
   "Id": "3",
   "Description": "AMAZON",
   "Amount": 368.37,
   "DetailType": "JournalEntryLineDetail",
   "JournalEntryLineDetail": {
    "PostingType": "Debit",
    "Entity": {
     "Type": "Employee",
     "EntityRef": {
      "value": "67",
      "name": "Shwetabh Kumar"
     }
    },
    "AccountRef": {
     "value": "146",
     "name": "Recharges"
    },
    "DepartmentRef": {
     "value": "8",
     "name": "Chase Ortega"
    }
   }
  }
 ],
 "TxnTaxDetail": {}
}"""

_RAW["Payment"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "DepositToAccountRef": {
  "value": "4"
 },
 "UnappliedAmt": 10.0,
 "TxnDate": "2015-01-16",
 "TotalAmt": 65.0,
 "ProjectRef": {
  "value": "39298034"
 },
 "ProcessPayment": false,
 "sparse": false,
 "Line": [
  {
   "Amount": 55.0,
   "LineEx": {
    "any": [
     {
      "name": "{http://schema.intuit.com/finance/v3}NameValue",
      "nil": false,
      "value": {
       "Name": "txnId",
       "Value": "70"
      },
      "declaredType": "com.intuit.schema.finance.v3.NameValue",
      "scope": "javax.xml.bind.JAXBElement$GlobalScope",
      "globalScope": true,
      "typeSubstituted": false
     },
     {
      "name": "{http://schema.intuit.com/finance/v3}NameValue",
      "nil": false,
      "value": {
       "Name": "txnOpenBalance",
       "Value": "71.00"
      },
      "declaredType": "com.intuit.schema.finance.v3.NameValue",
      "scope": "javax.xml.bind.JAXBElement$GlobalScope",
      "globalScope": true,
      "typeSubstituted": false
     },
     {
      "name": "{http://schema.intuit.com/finance/v3}NameValue",
      "nil": false,
      "value": {
       "Name": "txnReferenceNumber",
       "Value": "1024"
      },
      "declaredType": "com.intuit.schema.finance.v3.NameValue",
      "scope": "javax.xml.bind.JAXBElement$GlobalScope",
      "globalScope": true,
      "typeSubstituted": false
     }
    ]
   },
   "LinkedTxn": [
    {
     "TxnId": "70",
     "TxnType": "Invoice"
    }
   ]
  }
 ],
 "CustomerRef": {
  "name": "Red Rock Diner",
  "value": "20"
 },
 "Id": "163",
 "MetaData": {
  "CreateTime": "2015-01-16T15:08:12-08:00",
  "LastUpdatedTime": "2015-01-16T15:08:12-08:00"
 }
}"""

_RAW["PaymentMethod"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "Name": "Diners Club",
 "sparse": false,
 "Active": true,
 "Type": "CREDIT_CARD",
 "Id": "7",
 "MetaData": {
  "CreateTime": "2014-09-11T14:42:05-07:00",
  "LastUpdatedTime": "2014-09-11T14:42:05-07:00"
 }
}"""

_RAW["Purchase"] = r"""{
 "AccountRef": {
  "value": "142",
  "name": "Personal"
 },
 "PaymentType": "Check",
 "EntityRef": {
  "value": "67",
  "name": "Shwetabh Kumar",
  "type": "Employee"
 },
 "TotalAmt": 207.0,
 "PrintStatus": "NotSet",
 "PurchaseEx": {
  "any": [
   {
    "name": "{http://schema.intuit.com/finance/v3}NameValue",
    "declaredType": "com.intuit.schema.finance.v3.NameValue",
    "scope": "javax.xml.bind.JAXBElement$GlobalScope",
    "value": {
     "Name": "TxnType",
     "Value": "3"
    },
    "nil": false,
    "globalScope": true,
    "typeSubstituted": false
   }
  ]
 },
 "domain": "QBO",
 "sparse": false,
 "Id": "1450",
 "SyncToken": "2",
 "MetaData": {
  "CreateTime": "2019-12-18T00:53:10-08:00",
  "LastUpdatedTime": "2019-12-18T00:53:30-08:00"
 },
 "TxnDate": "2019-12-13",
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "ExchangeRate": 1,
 "Line": [
  {
   "Id": "1",
   "Description": "Client Meeting",
   "Amount": 105.0,
   "DetailType": "AccountBasedExpenseLineDetail",
   "AccountBasedExpenseLineDetail": {
    "AccountRef": {
     "value": "146",
     "name": "Recharges"
    },
    "BillableStatus": "NotBillable",
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  },
  {
   "Id": "2",
   "Description": "Test",
   "Amount": 102.0,
   "DetailType": "AccountBasedExpenseLineDetail",
   "AccountBasedExpenseLineDetail": {
    "ClassRef": {
     "value": "5000000000000085682",
     "name": "Adidas"
    },
    "AccountRef": {
     "value": "146",
     "name": "Recharges"
    },
    "BillableStatus": "NotBillable",
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  }
 ]
}"""

_RAW["PurchaseOrder"] = r"""{
 "DocNumber": "1005",
 "SyncToken": "0",
 "POEmail": {
  "Address": "send_email@intuit.com"
 },
 "APAccountRef": {
  "name": "Accounts Payable (A/P)",
  "value": "33"
 },
 "CurrencyRef": {
  "name": "United States Dollar",
  "value": "USD"
 },
 "TxnDate": "2015-07-28",
 "TotalAmt": 25.0,
 "ShipAddr": {
  "Line4": "Half Moon Bay, CA  94213",
  "Line3": "65 Ocean Dr.",
  "Id": "121",
  "Line1": "Grace Pariente",
  "Line2": "Cool Cars"
 },
 "domain": "QBO",
 "Id": "257",
 "POStatus": "Open",
 "sparse": false,
 "EmailStatus": "NotSet",
 "VendorRef": {
  "name": "Hicks Hardware",
  "value": "41"
 },
 "Line": [
  {
   "DetailType": "ItemBasedExpenseLineDetail",
   "Amount": 25.0,
   "ProjectRef": {
    "value": "39298034"
   },
   "Id": "1",
   "ItemBasedExpenseLineDetail": {
    "ItemRef": {
     "name": "Garden Supplies",
     "value": "38"
    },
    "CustomerRef": {
     "name": "Cool Cars",
     "value": "3"
    },
    "Qty": 1,
    "TaxCodeRef": {
     "value": "NON"
    },
    "BillableStatus": "NotBillable",
    "UnitPrice": 25
   }
  }
 ],
 "CustomField": [
  {
   "DefinitionId": "1",
   "Type": "StringType",
   "Name": "Crew #"
  },
  {
   "DefinitionId": "2",
   "Type": "StringType",
   "Name": "Sales Rep"
  }
 ],
 "VendorAddr": {
  "Line4": "Middlefield, CA  94303",
  "Line3": "42 Main St.",
  "Id": "120",
  "Line1": "Geoff Hicks",
  "Line2": "Hicks Hardware"
 },
 "MetaData": {
  "CreateTime": "2015-07-28T16:01:47-07:00",
  "LastUpdatedTime": "2015-07-28T16:01:47-07:00"
 }
}"""

_RAW["RefundReceipt"] = r"""{
 "DocNumber": "1020",
 "SyncToken": "0",
 "domain": "QBO",
 "Balance": 0,
 "PaymentMethodRef": {
  "name": "Check",
  "value": "2"
 },
 "BillAddr": {
  "Line4": "South Orange, NJ  07079",
  "Line3": "350 Mountain View Dr.",
  "Line2": "Pye's Cakes",
  "Line1": "Karen Pye",
  "Long": "-74.2609903",
  "Lat": "40.7489277",
  "Id": "73"
 },
 "DepositToAccountRef": {
  "name": "Checking",
  "value": "35"
 },
 "TxnDate": "2014-09-17",
 "TotalAmt": 87.5,
 "CustomerRef": {
  "name": "Pye's Cakes",
  "value": "15"
 },
 "CustomerMemo": {
  "value": "Thank you for your business and have a great day!"
 },
 "ShipAddr": {
  "City": "South Orange",
  "Line1": "350 Mountain View Dr.",
  "PostalCode": "07079",
  "Lat": "40.7633073",
  "Long": "-74.2426072",
  "CountrySubDivisionCode": "NJ",
  "Id": "15"
 },
 "PrintStatus": "NotSet",
 "BillEmail": {
  "Address": "pyescakes@intuit.com"
 },
 "sparse": false,
 "Line": [
  {
   "Description": "Refund - Pest control was ineffective",
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "TaxCodeRef": {
     "value": "NON"
    },
    "Qty": 2.5,
    "UnitPrice": 35,
    "ItemRef": {
     "name": "Pest Control",
     "value": "10"
    }
   },
   "LineNum": 1,
   "Amount": 87.5,
   "Id": "1"
  },
  {
   "DetailType": "SubTotalLineDetail",
   "Amount": 87.5,
   "SubTotalLineDetail": {}
  }
 ],
 "ApplyTaxAfterDiscount": false,
 "CustomField": [
  {
   "DefinitionId": "1",
   "Type": "StringType",
   "Name": "Crew #"
  }
 ],
 "Id": "66",
 "TxnTaxDetail": {
  "TotalTax": 0
 },
 "MetaData": {
  "CreateTime": "2014-09-17T15:35:07-07:00",
  "LastUpdatedTime": "2014-09-17T15:35:07-07:00"
 }
}"""

_RAW["SalesReceipt"] = r"""{
 "domain": "QBO",
 "sparse": false,
 "Id": "17",
 "SyncToken": "4",
 "MetaData": {
  "CreateTime": "2015-10-06T15:12:39-07:00",
  "LastUpdatedTime": "2020-09-29T04:58:13-07:00"
 },
 "CustomField": [
  {
   "DefinitionId": "1",
   "Name": "Crew #",
   "Type": "StringType"
  }
 ],
 "DocNumber": "1008",
 "TxnDate": "2020-09-29",
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "Line": [
  {
   "Id": "5",
   "LineNum": 1,
   "Description": "Custom Design",
   "Amount": 337.5,
   "DetailType": "SalesItemLineDetail",
   "SalesItemLineDetail": {
    "ItemRef": {
     "value": "4",
     "name": "Design"
    },
    "UnitPrice": 75,
    "Qty": 4.5,
    "TaxCodeRef": {
     "value": "NON"
    }
   }
  },
  {
   "Amount": 337.5,
   "DetailType": "SubTotalLineDetail",
   "SubTotalLineDetail": {}
  }
 ],
 "TxnTaxDetail": {
  "TotalTax": 0
 },
 "TotalAmt": 337.5,
 "ApplyTaxAfterDiscount": false,
 "PrintStatus": "NeedToPrint",
 "EmailStatus": "NotSet",
 "Balance": 0,
 "DepositToAccountRef": {
  "value": "4",
  "name": "Undeposited Funds"
 }
}"""

_RAW["TaxCode"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "TaxGroup": true,
 "Name": "California",
 "Taxable": true,
 "PurchaseTaxRateList": {
  "TaxRateDetail": []
 },
 "sparse": false,
 "Active": true,
 "Description": "California",
 "MetaData": {
  "CreateTime": "2014-09-18T12:17:04-07:00",
  "LastUpdatedTime": "2014-09-18T12:17:04-07:00"
 },
 "Id": "2",
 "SalesTaxRateList": {
  "TaxRateDetail": [
   {
    "TaxTypeApplicable": "TaxOnAmount",
    "TaxRateRef": {
     "name": "California",
     "value": "3"
    },
    "TaxOrder": 0
   }
  ]
 }
}"""

_RAW["TaxRate"] = r"""{
 "RateValue": 2,
 "AgencyRef": {
  "value": "1"
 },
 "domain": "QBO",
 "Name": "Tucson City",
 "SyncToken": "0",
 "SpecialTaxType": "NONE",
 "DisplayType": "ReadOnly",
 "sparse": false,
 "Active": true,
 "MetaData": {
  "CreateTime": "2014-09-18T12:17:04-07:00",
  "LastUpdatedTime": "2014-09-18T12:17:04-07:00"
 },
 "Id": "2",
 "Description": "Sales Tax"
}"""

_RAW["Term"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "Name": "Net 60",
 "DiscountPercent": 0,
 "DiscountDays": 0,
 "Type": "STANDARD",
 "sparse": false,
 "Active": true,
 "DueDays": 60,
 "Id": "4",
 "MetaData": {
  "CreateTime": "2014-09-11T14:41:49-07:00",
  "LastUpdatedTime": "2014-09-11T14:41:49-07:00"
 }
}"""

_RAW["TimeActivity"] = r"""{
 "TxnDate": "2014-09-17",
 "domain": "QBO",
 "NameOf": "Employee",
 "Description": "Garden Lighting",
 "ItemRef": {
  "name": "Lighting",
  "value": "8"
 },
 "Minutes": 0,
 "ProjectRef": {
  "value": "39298045"
 },
 "Hours": 3,
 "BillableStatus": "HasBeenBilled",
 "sparse": false,
 "HourlyRate": 15,
 "Taxable": false,
 "EmployeeRef": {
  "name": "Emily Platt",
  "value": "55"
 },
 "SyncToken": "0",
 "CustomerRef": {
  "name": "Rondonuwu Fruit and Vegi",
  "value": "21"
 },
 "Id": "5",
 "MetaData": {
  "CreateTime": "2014-09-17T11:55:25-07:00",
  "LastUpdatedTime": "2014-09-18T13:45:12-07:00"
 }
}"""

_RAW["Transfer"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "TxnDate": "2015-02-06",
 "ToAccountRef": {
  "name": "Savings",
  "value": "36"
 },
 "Amount": 120.0,
 "sparse": false,
 "Id": "170",
 "FromAccountRef": {
  "name": "Checking",
  "value": "35"
 },
 "MetaData": {
  "CreateTime": "2015-02-06T11:06:12-08:00",
  "LastUpdatedTime": "2015-02-06T11:06:12-08:00"
 }
}"""

_RAW["Vendor"] = r"""{
 "BillAddr": {
  "Id": "32",
  "Line1": "P.O. Box 5",
  "City": "Middlefield",
  "CountrySubDivisionCode": "CA",
  "PostalCode": "94482",
  "Lat": "43.8249453",
  "Long": "-79.2639122"
 },
 "TaxIdentifier": "XXXXXX9875",
 "Balance": 241.23,
 "AcctNum": "7653412",
 "Vendor1099": true,
 "CurrencyRef": {
  "value": "USD",
  "name": "United States Dollar"
 },
 "domain": "QBO",
 "sparse": false,
 "Id": "31",
 "SyncToken": "0",
 "MetaData": {
  "CreateTime": "2015-10-02T10:12:02-07:00",
  "LastUpdatedTime": "2015-10-06T15:28:48-07:00"
 },
 "GivenName": "Nick",
 "FamilyName": "Brosnahan",
 "CompanyName": "Brosnahan Insurance Agency",
 "DisplayName": "Brosnahan Insurance Agency",
 "PrintOnCheckName": "Brosnahan Insurance Agency",
 "Active": true,
 "PrimaryPhone": {
  "FreeFormNumber": "(650) 555-9912"
 },
 "Mobile": {
  "FreeFormNumber": "(650) 555-9874"
 },
 "Fax": {
  "FreeFormNumber": "(555) 123-4567"
 },
 "WebAddr": {
  "URI": "http://BrosnahanInsuranceAgency.org"
 }
}"""

_RAW["VendorCredit"] = r"""{
 "SyncToken": "0",
 "domain": "QBO",
 "VendorRef": {
  "name": "Books by Bessie",
  "value": "30"
 },
 "TxnDate": "2014-12-23",
 "TotalAmt": 90.0,
 "APAccountRef": {
  "name": "Accounts Payable (A/P)",
  "value": "33"
 },
 "sparse": false,
 "Line": [
  {
   "DetailType": "AccountBasedExpenseLineDetail",
   "Amount": 90.0,
   "ProjectRef": {
    "value": "39298045"
   },
   "Id": "1",
   "AccountBasedExpenseLineDetail": {
    "TaxCodeRef": {
     "value": "TAX"
    },
    "AccountRef": {
     "name": "Bank Charges",
     "value": "8"
    },
    "BillableStatus": "Billable",
    "CustomerRef": {
     "name": "Amy's Bird Sanctuary",
     "value": "1"
    }
   }
  }
 ],
 "Id": "255",
 "MetaData": {
  "CreateTime": "2015-07-28T14:13:30-07:00",
  "LastUpdatedTime": "2015-07-28T14:13:30-07:00"
 }
}"""

TEMPLATES: dict[str, dict] = {name: orjson.loads(text) for name, text in _RAW.items()}

# What a deactivated name-list row looks like (Account.inactive.json): QBO appends
# " (deleted)" to Name and FullyQualifiedName.
DELETED_SUFFIX = " (deleted)"
